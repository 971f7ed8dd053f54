print("agent-bench: no benchmarks yet")
