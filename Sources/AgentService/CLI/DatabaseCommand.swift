import ArgumentParser
import Foundation
import Logging
import ThreadStore

/// `agent-service db`: the embedded local PostgreSQL (used when DATABASE_URL is unset).
struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Manage the embedded local PostgreSQL under .agent-service/ (used when DATABASE_URL is unset).",
        discussion: """
            The embedded cluster starts on first use and keeps running after agent-service exits, so several \
            processes (serve, chat, replay) share it. `db stop` shuts it down; its data stays and the next command \
            starts it again.
            """,
        subcommands: [Stop.self]
    )

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stop", abstract: "Stop the embedded PostgreSQL (data is kept).")

        func run() async throws {
            let environment: AppEnvironment
            do { environment = try AppEnvironment.current() } catch { CLI.fail("\(error)") }
            if environment["DATABASE_URL"] != nil {
                CLI.fail("DATABASE_URL is set: there is no embedded database to stop")
            }
            let logger = CLI.bootstrapLogging(level: .warning)
            let embedded = EmbeddedPostgres(logger: logger)
            do {
                try await onThread { try embedded.stop() }
            } catch {
                CLI.fail("\(error)")
            }
            CLI.write("stopped the embedded PostgreSQL in \(embedded.directory.path) (its data is kept)\n")
        }

        /// pg_ctl blocks: run it off the cooperative pool.
        private func onThread(_ work: @escaping @Sendable () throws -> Void) async throws {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                Thread { continuation.resume(with: Result { try work() }) }.start()
            }
        }
    }
}
