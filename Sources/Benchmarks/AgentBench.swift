import ArgumentParser

/// `agent-bench`: benchmark commands that print figures (never assertions).
@main
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-bench",
        abstract: "Benchmarks of agent-service components.",
        subcommands: [ClaudeBenchmark.self, ServiceBenchmark.self, StubCommand.self]
    )
}
