enum ThreadStoreModule {}
