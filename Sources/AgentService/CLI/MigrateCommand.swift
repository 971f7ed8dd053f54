import ArgumentParser
import Foundation
import Logging
import ThreadStore

/// `agent-service migrate`: applies the schema migrations compiled into the binary (or from `--dir`).
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply pending database migrations (safe when several instances start at once).",
        discussion: """
            Connects to DATABASE_URL (directly or through a session-mode pooler), or to the embedded local cluster \
            when DATABASE_URL is unset. A transaction-mode pooler (PgBouncer's pool_mode = transaction, Supabase's \
            port 6543) is detected whatever its port and refused before anything is locked or written, since the \
            migration lock would not hold there. Waits for an advisory lock, \
            then applies each pending migration in its own transaction and records it in \
            supabase_migrations.schema_migrations (so `supabase migration list` agrees) with a SHA-256 checksum in \
            supabase_migrations.agent_service_migrations. Refuses to run when an applied migration file was edited.
            """
    )

    @Flag(name: .long, help: "List every migration as applied or pending, and change nothing.")
    var status = false

    @Option(name: .long, help: "Read migrations from this folder instead of the ones built into the binary.")
    var dir: String?

    @Option(name: .long, help: "Seconds to wait for another instance that holds the migration lock.")
    var lockTimeout: Int = 600

    func run() async throws {
        var logger = Logger(label: "agent-service.migrate")
        logger.logLevel = .notice
        var prefix = ""
        do {
            let environment = try AppEnvironment.current()
            if environment["DATABASE_URL"] != nil { prefix = "DATABASE_URL: " }
            let migrations = try dir.map { try Migration.load(from: URL(fileURLWithPath: $0)) } ?? Migration.bundled
            let target = try await DatabaseTarget.resolve(environment: environment, logger: logger)
            let migrator = Migrator(
                migrations: migrations, conninfo: target.conninfo, lockTimeout: .seconds(lockTimeout), logger: logger)
            if status {
                print("Database: \(target.description)")
                for line in try await migrator.status() {
                    print(
                        "\(line.version)  \(line.state.rawValue.padding(toLength: 16, withPad: " ", startingAt: 0))  \(line.name)"
                    )
                }
                return
            }
            let report = try await migrator.run()
            if report.applied.isEmpty {
                print("Database is up to date (\(report.alreadyApplied) migration(s) applied): \(target.description)")
            } else {
                for version in report.applied {
                    let name = migrations.first { $0.version == version }?.fileName ?? version
                    print("applied \(name)")
                }
                print("Applied \(report.applied.count) migration(s): \(target.description)")
            }
        } catch let error as StoreError {
            FileHandle.standardError.write(Data("agent-service migrate: \(prefix)\(error.message)\n".utf8))
            throw ExitCode.failure
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("agent-service migrate: \(error.description)\n".utf8))
            throw ExitCode.failure
        }
    }
}
