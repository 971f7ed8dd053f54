enum ClaudeModule {}
