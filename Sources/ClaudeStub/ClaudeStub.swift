enum ClaudeStubModule {}
