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

    /// - Parameter statementStatistics: load `pg_stat_statements` (nested statements and planning tracked too) in a
    ///   throwaway cluster, for `statementCounts()`.
    static func start(settings: [String] = [], statementStatistics: Bool = false) async throws -> BenchDatabase {
        var logger = Logger(label: "agent-bench")
        logger.logLevel = .warning
        if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty {
            return BenchDatabase(
                conninfo: url, database: Database(configuration: .init(conninfo: url, poolSize: 4), logger: logger),
                embedded: nil)
        }
        let directory = URL(fileURLWithPath: "/tmp/agent-bench-\(getpid())/postgres")
        let statistics =
            statementStatistics
            ? [
                "shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track = all",
                "pg_stat_statements.track_planning = on",
            ] : []
        let postgres = EmbeddedPostgres(
            directory: directory, databaseName: "agent_bench",
            extraSettings: ["max_connections = 200"] + statistics + settings, logger: logger)
        let conninfo = try await postgres.startDetached()
        let database = Database(configuration: .init(conninfo: conninfo, poolSize: 4), logger: logger)
        if statementStatistics {
            _ = try await database.withConnection { try $0.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements") }
        }
        return BenchDatabase(conninfo: conninfo, database: database, embedded: postgres)
    }

    /// Statements Postgres ran since the last call: top level (what the service sent), nested (inside functions),
    /// and plans made; nil without `pg_stat_statements`. Resets the counts.
    func statementCounts() async -> (topLevel: Int, nested: Int, plans: Int, heaviest: [String])? {
        guard embedded != nil else { return nil }
        let result = try? await database.withConnection {
            let counts = try $0.query(
                """
                SELECT coalesce(sum(calls) FILTER (WHERE toplevel), 0), coalesce(sum(calls) FILTER (WHERE NOT toplevel), 0),
                    coalesce(sum(plans), 0)
                FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
                """)
            // Where the statements' time went: each statement's calls, total execution and planning time (a nested
            // statement's time is also part of the function that ran it).
            let heaviest = try $0.query(
                """
                SELECT toplevel::text, calls::text, round(total_exec_time::numeric, 1)::text,
                    round(total_plan_time::numeric, 1)::text, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
                FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
                ORDER BY total_exec_time + total_plan_time DESC LIMIT 12
                """)
            _ = try $0.query("SELECT pg_stat_statements_reset()")
            return (counts, heaviest)
        }
        guard let (counts, heaviest) = result, let top = counts.int(0, 0), let nested = counts.int(0, 1),
            let plans = counts.int(0, 2)
        else {
            return nil
        }
        let lines = heaviest.rows.indices.map { row in
            let column = { (c: Int) in heaviest.string(row, c) ?? "" }
            return
                "\(column(0) == "true" ? "top   " : "nested") calls \(column(1)), exec \(column(2)) ms, plan \(column(3)) ms: \(column(4))"
        }
        return (top, nested, plans, lines)
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
