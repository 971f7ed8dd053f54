import ArgumentParser

@main
struct AgentServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent-service",
        abstract: "Real-time Claude replies with memory: an SSE chat service over Postgres.",
        subcommands: [
            ServeCommand.self, MigrateCommand.self, ChatCommand.self, ReplayCommand.self, ThreadsCommand.self,
            DatabaseCommand.self, TokenCommand.self,
        ],
        defaultSubcommand: ServeCommand.self
    )
}
