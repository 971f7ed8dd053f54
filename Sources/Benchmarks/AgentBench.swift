import ArgumentParser

/// `agent-bench`: commands that print performance figures (never assertions).
@main
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-bench",
        abstract: "Benchmarks for agent-service's modules; each prints figures.",
        subcommands: [
            StoreBenchmark.self,
        ]
    )
}
