import Foundation
public import Logging
public import ThreadStore
import Synchronization

/// A throwaway PostgreSQL cluster shared by the whole test process, started on first use and stopped at exit.
///
/// Each test asks for a fresh, migrated database (`CREATE DATABASE t_<random>`), so tests never see each other's rows
/// and may run in parallel. Nothing needs to run beforehand: the cluster lives under `/tmp` and is initialized with
/// the server package's `initdb`.
public enum TestPostgres {
    /// Logger for test infrastructure (warnings only, so test output stays readable).
    public static let logger: Logger = {
        var logger = Logger(label: "test-postgres")
        logger.logLevel = .warning
        return logger
    }()

    private static let cluster: Task<EmbeddedPostgres, any Error> = Task {
        removeClustersOfDeadProcesses()
        let directory = URL(fileURLWithPath: "/tmp/agent-service-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let postgres = EmbeddedPostgres(
            directory: directory, databaseName: "postgres",
            extraSettings: [
                "fsync = off", "synchronous_commit = off", "full_page_writes = off", "max_connections = 200",
            ],
            logger: logger)
        try? FileManager.default.removeItem(at: directory)
        registered.withLock { $0 = postgres }
        atexit { TestPostgres.stopAtExit() }
        _ = try await postgres.startDetached()
        return postgres
    }

    /// Stops and removes clusters left behind by test processes that crashed (atexit never ran for them).
    private static func removeClustersOfDeadProcesses() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        for name in names where name.hasPrefix("agent-service-test-") && !name.hasSuffix(".lock") {
            let parts = name.split(separator: "-")
            guard parts.count == 5, let pid = Int32(parts[3]), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let directory = URL(fileURLWithPath: "/tmp/\(name)")
            try? EmbeddedPostgres(directory: directory, logger: logger).stop(immediate: true)
            try? FileManager.default.removeItem(at: directory)
            try? FileManager.default.removeItem(atPath: directory.path + ".lock")
        }
    }

    private static let registered = Mutex<EmbeddedPostgres?>(nil)

    private static func stopAtExit() {
        guard let postgres = registered.withLock({ $0 }) else { return }
        try? postgres.stop(immediate: true)
        try? FileManager.default.removeItem(at: postgres.directory)
        try? FileManager.default.removeItem(atPath: postgres.directory.path + ".lock")
    }

    /// The shared cluster, started if needed.
    public static func embedded() async throws -> EmbeddedPostgres {
        try await cluster.value
    }

    /// A new empty database (not migrated) in the shared cluster; returns its conninfo.
    public static func emptyDatabase() async throws -> String {
        let postgres = try await cluster.value
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        let admin = Database(
            // Many suites create databases at once at the start of a run; on 2 cores one may wait a while.
            configuration: DatabaseConfiguration(
                conninfo: postgres.conninfo(database: "postgres"), poolSize: 1, statementTimeout: .seconds(120)),
            logger: logger)
        do {
            _ = try await admin.withConnection { try $0.query(SQLQuery(unsafeSQL: "CREATE DATABASE \(name)")) }
        } catch {
            await admin.close()
            throw error
        }
        await admin.close()
        return postgres.conninfo(database: String(name))
    }

    /// A new database with every bundled migration applied, and a pool on it (close it when done); `configure` may
    /// change the pool's limits.
    public static func freshDatabase(
        poolSize: Int = 4, configure: (inout DatabaseConfiguration) -> Void = { _ in }
    ) async throws -> (conninfo: String, database: Database) {
        let conninfo = try await emptyDatabase()
        _ = try await Migrator(conninfo: conninfo, logger: logger).run()
        var configuration = DatabaseConfiguration(conninfo: conninfo, poolSize: poolSize)
        configure(&configuration)
        return (conninfo, Database(configuration: configuration, logger: logger))
    }
}
