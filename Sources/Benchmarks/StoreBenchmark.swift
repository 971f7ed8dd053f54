import ArgumentParser
import Foundation
import Logging
import ThreadStore

/// `agent-bench store`: latency of beginTurn/completeTurn and round trips per turn against real Postgres.
struct StoreBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Measure beginTurn and completeTurn latency (median, p99) and database round trips per turn.",
        discussion: """
            Uses DATABASE_URL when set (migrating it first); otherwise starts a throwaway PostgreSQL cluster under \
            /tmp and removes it afterwards. Turns run one after another, spread over --threads threads, so each \
            begin also loads a growing history (up to 50 turns).
            """
    )

    @Option(help: "Number of turns (each one beginTurn + one completeTurn).")
    var calls = 1000

    @Option(help: "Number of chat threads the turns are spread over.")
    var threads = 100

    @Option(help: "Connection pool size.")
    var poolSize = 4

    @Flag(help: "Leave row-level security out (each user's statements run as the table owner), to measure its cost.")
    var withoutRowSecurity = false

    @Flag(
        help:
            "Drop the memory-search index (the turns.search_vector column and its GIN index) after migrating, to measure what it costs on the write path."
    )
    var withoutMemoryIndex = false

    func run() async throws {
        var logger = Logger(label: "agent-bench.store")
        logger.logLevel = .warning
        var cluster: EmbeddedPostgres?
        let conninfo: String
        let place: String
        if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty {
            conninfo = url
            place = "DATABASE_URL"
        } else {
            let embedded = EmbeddedPostgres(
                directory: URL(fileURLWithPath: "/tmp/agent-bench-\(getpid())"), databaseName: "bench", logger: logger)
            conninfo = try await embedded.startDetached()
            cluster = embedded
            place = "throwaway local cluster (PostgreSQL via Unix socket, fsync on)"
        }
        defer {
            if let cluster {
                try? cluster.stop(immediate: true)
                try? FileManager.default.removeItem(at: cluster.directory)
                try? FileManager.default.removeItem(atPath: cluster.directory.path + ".lock")
            }
        }
        _ = try await Migrator(conninfo: conninfo, logger: logger).run()
        if withoutMemoryIndex {
            let owner = Database(
                configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1, applicationName: "agent-bench"),
                logger: logger)
            try await owner.withConnection { connection in
                _ = try connection.query("ALTER TABLE public.turns DROP COLUMN IF EXISTS search_vector")
            }
            await owner.close()
        }
        let database = Database(
            configuration: DatabaseConfiguration(
                conninfo: conninfo, poolSize: poolSize, applicationName: "agent-bench"),
            logger: logger)
        let repository = ThreadRepository(database: database, rowSecurity: !withoutRowSecurity)
        let user = UUID()
        let clock = ContinuousClock()

        // Warm up the connection (not measured).
        try await repository.ping()

        let cpuBefore = cluster.flatMap(BenchDatabase.cpuSeconds(of:))
        var begins: [Duration] = []
        var completes: [Duration] = []
        var beginTrips = 0
        var completeTrips = 0
        for index in 0..<calls {
            let question = "Benchmark question \(index): how do I keep my Friday focus block? 🙂"
            let tripsBefore = database.statistics.roundTrips
            let beginStart = clock.now
            let result = try await repository.beginTurn(
                BeginTurnRequest(userID: user, threadID: "bench-\(index % max(1, threads))", question: question))
            begins.append(clock.now - beginStart)
            let tripsMiddle = database.statistics.roundTrips
            guard case .started(let turn) = result else { throw ValidationError("unexpected duplicate turn") }
            let completeStart = clock.now
            try await repository.completeTurn(
                TurnCompletion(
                    turnID: turn.turnID, userID: user, reply: String(repeating: "A measured reply. ", count: 40),
                    model: "claude-bench", stopReason: "end_turn",
                    usage: TokenUsage(inputTokens: 1200, outputTokens: 180, cacheReadInputTokens: 1000),
                    firstTokenMs: 300, latencyMs: 2000))
            completes.append(clock.now - completeStart)
            beginTrips += tripsMiddle - tripsBefore
            completeTrips += database.statistics.roundTrips - tripsMiddle
        }
        let cpuAfter = cluster.flatMap(BenchDatabase.cpuSeconds(of:))
        await database.close()

        func milliseconds(_ duration: Duration) -> String {
            let value = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
            return String(format: "%.3f ms", value)
        }
        func percentile(_ values: [Duration], _ fraction: Double) -> Duration {
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
        }
        let turns = Double(max(1, calls))
        print(
            "agent-bench store: \(calls) turns over \(threads) threads, pool \(poolSize), sequential, row-level security \(withoutRowSecurity ? "off" : "on"), memory index \(withoutMemoryIndex ? "off" : "on"), on \(place)"
        )
        print(
            "  beginTurn     median \(milliseconds(percentile(begins, 0.5)))  p99 \(milliseconds(percentile(begins, 0.99)))"
        )
        print(
            "  completeTurn  median \(milliseconds(percentile(completes, 0.5)))  p99 \(milliseconds(percentile(completes, 0.99)))"
        )
        print(
            String(
                format: "  round trips per turn: %.2f (beginTurn %.2f, completeTurn %.2f)",
                Double(beginTrips + completeTrips) / turns, Double(beginTrips) / turns, Double(completeTrips) / turns))
        if let cpuBefore, let cpuAfter {
            print(
                String(
                    format: "  Postgres CPU per turn (all its processes): %.3f ms",
                    (cpuAfter - cpuBefore) * 1_000 / turns))
        }
    }
}
