import ArgumentParser

/// `agent-bench`: benchmark commands that print figures (never assertions).
@main
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-bench",
        abstract: "Benchmarks of agent-service and its modules; each prints figures.",
        subcommands: [
            ServiceBenchmark.self, ClaudeBenchmark.self, StoreBenchmark.self, AuthBenchmark.self, FloodBenchmark.self, ResumeBenchmark.self, ToolsBenchmark.self,
            StubCommand.self, RelayFloorCommand.self,
        ]
    )
}
