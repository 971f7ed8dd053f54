import Foundation
import Logging
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

/// The Postgres a benchmark runs against: `DATABASE_URL` when set, else a throwaway cluster under /tmp (stock
/// settings: fsync and synchronous commit on, as in production).
struct BenchDatabase {
    let conninfo: String
    let database: Database
    private let embedded: EmbeddedPostgres?

    /// The throwaway cluster's folder (nil for a given DATABASE_URL).
    var directory: URL? { embedded?.directory }

    static func start(settings: [String] = []) async throws -> BenchDatabase {
        var logger = Logger(label: "agent-bench")
        logger.logLevel = .warning
        if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty {
            return BenchDatabase(
                conninfo: url, database: Database(configuration: .init(conninfo: url, poolSize: 4), logger: logger),
                embedded: nil)
        }
        let directory = URL(fileURLWithPath: "/tmp/agent-bench-\(getpid())/postgres")
        let postgres = EmbeddedPostgres(
            directory: directory, databaseName: "agent_bench", extraSettings: ["max_connections = 200"] + settings,
            logger: logger)
        let conninfo = try await postgres.startDetached()
        return BenchDatabase(
            conninfo: conninfo,
            database: Database(configuration: .init(conninfo: conninfo, poolSize: 4), logger: logger),
            embedded: postgres)
    }

    /// CPU seconds used so far by a cluster's postmaster and every process it started (backends, WAL writer,
    /// checkpointer…, exited backends included), from /proc.
    static func cpuSeconds(of cluster: EmbeddedPostgres) -> Double? {
        guard
            let pidFile = try? String(
                contentsOf: cluster.directory.appendingPathComponent("data/postmaster.pid"), encoding: .utf8),
            let postmaster = pidFile.split(separator: "\n").first.flatMap({ Int32($0) })
        else { return nil }
        return processTreeCPU(postmaster)
    }

    /// Stops and removes a throwaway cluster (a given DATABASE_URL is left alone).
    func stop() {
        guard let embedded else { return }
        try? embedded.stop(immediate: true)
        try? FileManager.default.removeItem(at: embedded.directory.deletingLastPathComponent())
    }
}
