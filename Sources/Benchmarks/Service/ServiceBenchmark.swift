import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import TestSupport
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

/// `agent-bench service`: the whole service under load, against the stub and a real Postgres.
///
/// Three processes: this load generator (NIO, one thread), `agent-bench stub` (the Claude stub, stamping each delta
/// with its send time) and the real `agent-service serve` binary. The service's CPU and memory come from /proc, its
/// database round trips from its /metrics.
struct ServiceBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service",
        abstract: "Drive N concurrent /query_stream clients through agent-service and report added latency and cost.")

    @Option(help: "Comma-separated concurrency levels.")
    var levels = "1,100,1000,5000,10000"

    @Option(help: "Consecutive turns per thread (1: every stream is a new thread).")
    var turnsPerThread = 1

    @Option(help: "Text deltas per reply.")
    var deltas = 20

    @Option(help: "Milliseconds between deltas at the stub.")
    var intervalMs = 100

    @Option(help: "Milliseconds the stub waits before the first delta.")
    var firstMs = 50

    @Option(help: "New streams opened per second while ramping up a level.")
    var rampPerSecond = 4_000

    @Flag(help: "Open all of a level's streams at once (a burst), instead of ramping at --ramp-per-second.")
    var burst = false

    @Option(help: "The agent-service binary (build it with `swift build -c release`).")
    var binary = ".build/release/agent-service"

    @Option(help: "The agent-bench binary that runs the stub (default: this one).")
    var benchBinary: String?

    @Option(help: "Database pool size of the service.")
    var poolSize = 8

    @Option(
        help: "An extra postgresql.conf line for the throwaway cluster, e.g. 'synchronous_commit = off' (repeatable).")
    var postgresSetting: [String] = []

    @Option(help: "agent-service instances on the one database (load spread round-robin, or through --proxy).")
    var instances = 1

    @Flag(help: "Put PgBouncer (pool_mode = transaction) between the instances and Postgres; LISTEN stays direct.")
    var pooler = false

    @Flag(help: "Put nginx (round-robin, proxy_buffering off) in front of the instances.")
    var proxy = false

    @Flag(
        help:
            "After each level, run it again through nginx alone relaying the stub's own stream byte for byte (the physical-limit anchor), and through `relay-floor`: the same byte relay built from the service's stack (Hummingbird and libcurl), without and with the service's two durable round trips per turn. Report each cost as a ratio to nginx's."
    )
    var relayBaseline = false

    @Flag(
        inversion: .prefixedNo,
        help: "Load pg_stat_statements in the throwaway cluster and report statements and plans per turn.")
    var statements = true

    @Flag(
        help:
            "Drop the memory-search index (turns.search_vector and its GIN index) once the service has migrated, to measure what it costs per turn here (the service's search_memory tool then fails; the load does not use it)."
    )
    var withoutMemoryIndex = false

    func run() async throws {
        let wanted = levels.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let largest = wanted.max() ?? 1
        let limit = raiseFileDescriptorLimit(to: rlim_t(max(65_536, largest * 4 + 1_000)))
        print(
            "# agent-bench service: levels \(wanted)\(burst ? " (each opened at once)" : ""), \(turnsPerThread) turn(s)/thread, \(deltas) deltas × \(intervalMs) ms, first delta after \(firstMs) ms"
        )
        print(
            "# machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB; open-file limit raised to \(limit)"
        )

        let topology = try await FleetTopology.start(
            instances: max(1, instances), pooler: pooler, proxy: proxy, maxStreams: largest, binary: binary,
            benchBinary: benchBinary ?? CommandLine.arguments[0],
            stubArguments: ["--first-ms", "\(firstMs)", "--interval-ms", "\(intervalMs)", "--deltas", "\(deltas)"],
            postgresSettings: postgresSetting, statementStatistics: statements,
            environment: [
                "DATABASE_POOL_SIZE": "\(poolSize)", "SSE_PING_SECONDS": "15",
                // The caps stay on (their cost is part of what is measured), set above the largest level.
                "MAX_ACTIVE_TURNS": "\(max(1_000, largest * 2))", "MAX_CONNECTIONS": "\(largest * 2 + 1_000)",
            ])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            if !postgresSetting.isEmpty { print("# postgres settings: \(postgresSetting.joined(separator: ", "))") }
            let fleetMode = instances > 1 || pooler || proxy
            if fleetMode {
                print(
                    "# \(topology.services.count) instance(s)\(pooler ? ", PgBouncer transaction mode between them and Postgres (LISTEN direct)" : ", direct to Postgres")\(proxy ? ", nginx round-robin in front" : ", load spread round-robin by the client")"
                )
            }
            let (database, stub) = (topology.base.database, topology.base.stub)
            let services = topology.services
            let ports = topology.ports
            let serviceStats = services.map { ProcessStats(pid: $0.pid) }
            let stubStats = ProcessStats(pid: stub.pid)
            let selfStats = ProcessStats.current
            let postmaster = topology.postmasterPID
            let sidecars: [(name: String, pid: Int32)] =
                (topology.pooler.map { [("pgbouncer", $0.pid)] } ?? []) + (topology.proxy.map { [("nginx", $0.pid)] } ?? [])


            let repository = ThreadRepository(database: database.database)
            if withoutMemoryIndex {
                _ = try await database.database.withConnection {
                    try $0.query("ALTER TABLE public.turns DROP COLUMN IF EXISTS search_vector")
                }
                print("# memory-search index dropped (turns.search_vector and its GIN index)")
            }

            // Warm up: the service opens its database connections and the first upstream connections lazily.
            _ = try await runLevel(min(20, largest), group: group, ports: ports)
            var breakdowns: [String] = []
            var fleetRows: [String] = []
            var anchorRows: [String] = []
            print("")
            print(
                "| streams | added TTFC p50 / p90 / p99 / max (ms) | added delta gap p50 / p99 (ms) | turns/s | errors | service CPU s / 1k turns | service peak RSS (MiB) | DB round trips / turn | persisted exact |"
            )
            print("|---:|---|---|---:|---|---:|---:|---:|---|")
            for level in wanted {
                var before: [Metrics.Sample] = []
                for service in services { before.append(try await Metrics.scrape(port: service.port)) }
                let cpusBefore = serviceStats.map { $0.cpuSeconds() }
                let postgresBefore = postmaster.map(processTreeCPU) ?? 0
                let sidecarsBefore = sidecars.map { processTreeCPU($0.pid) }
                let otherBefore = (stub: stubStats.cpuSeconds(), client: selfStats.cpuSeconds())
                for stats in serviceStats { stats.resetPeak() }
                _ = await database.statementCounts()
                let started = LoadClient.now()
                let results = try await runLevel(level, group: group, ports: ports)
                let elapsed = Double(LoadClient.now() - started) / 1e9
                let statementCounts = await database.statementCounts()
                let cpus = zip(serviceStats, cpusBefore).map { $0.cpuSeconds() - $1 }
                let cpu = cpus.reduce(0, +)
                let postgresCPU = (postmaster.map(processTreeCPU) ?? 0) - postgresBefore
                let sidecarCPU = zip(sidecars, sidecarsBefore).map { processTreeCPU($0.pid) - $1 }
                let stubCPU = stubStats.cpuSeconds() - otherBefore.stub
                let clientCPU = selfStats.cpuSeconds() - otherBefore.client
                var after: [Metrics.Sample] = []
                for service in services { after.append(try await Metrics.scrape(port: service.port)) }
                let trips = zip(after, before).map { $0.roundTrips - $1.roundTrips }.reduce(0, +)
                let report = try await LevelReport(
                    level: level, results: results, elapsed: elapsed, serviceCPU: cpu,
                    peakRSS: serviceStats.map { $0.peakRSS() }.max() ?? 0, roundTrips: trips,
                    repository: repository)
                let completed = Double(results.filter(\.done).count)
                let perThousand = { (seconds: Double) in
                    completed > 0 ? String(format: "%.2f", seconds / completed * 1_000) : "-"
                }
                let share = cpus.map { String(format: "%.0f%%", cpu > 0 ? $0 / cpu * 100 : 0) }.joined(separator: " / ")
                fleetRows.append(
                    "| \(level) | \(cpus.map(perThousand).joined(separator: " / ")) | \(share) | \(postmaster == nil ? "n/a" : perThousand(postgresCPU)) | \(zip(sidecars, sidecarCPU).map { "\($0.name) \(perThousand($1))" }.joined(separator: ", ").ifEmpty("-")) |"
                )
                let (service, firstBefore, firstAfter) = (services[0], before[0], after[0])
                _ = service
                print(report.row)
                breakdowns.append(
                    report.breakdown
                        + String(
                            format:
                                "; peak concurrent streams %d; CPU over the level: service %.1f s, stub %.1f s, load client %.1f s, wall %.1f s",
                            Self.peakConcurrency(results), cpu, stubCPU, clientCPU, elapsed)
                        + "; inside the\(services.count > 1 ? " first" : "") service, admission (parse + begin-turn) p50 \(firstAfter.admissionPercentile(50, since: firstBefore)), p99 \(firstAfter.admissionPercentile(99, since: firstBefore))"
                )
                if !report.errors.isEmpty { print("#   errors at \(level): \(report.errors)") }
                if let heaviest = statementCounts?.heaviest, !heaviest.isEmpty {
                    breakdowns.append(
                        "#   \(level): Postgres statements by time (pg_stat_statements):\n"
                            + heaviest.map { "#     \($0)" }.joined(separator: "\n"))
                }

                let f = { (value: Double) in String(format: "%.2f", value) }
                let perTurn = { (seconds: Double) in completed > 0 ? seconds / completed * 1_000 : .nan }
                let serviceRow = AnchorRow(
                    results: results, cpuPerTurn: perTurn(cpu), postgresPerTurn: postmaster.map { _ in perTurn(postgresCPU) },
                    statements: statementCounts.map { counts in
                        [counts.topLevel, counts.nested, counts.plans].map { f(Double($0) / max(1, completed)) }
                            .joined(separator: " / ")
                    })
                if relayBaseline {
                    let anchor = try await runRelayBaseline(level, group: group, stub: stub)
                    let floor = try await runRelayFloor(level, group: group, stub: stub)
                    let durable = try await runRelayFloor(
                        level, group: group, stub: stub, database: database.conninfo, postmaster: postmaster)
                    anchorRows.append(serviceRow.line(level: level, name: "agent-service", anchor: anchor.cpuPerTurn))
                    anchorRows.append(
                        durable.line(
                            level: level, name: "Hummingbird + libcurl + begin/finish turn → stub",
                            anchor: anchor.cpuPerTurn))
                    anchorRows.append(
                        floor.line(level: level, name: "Hummingbird + libcurl → stub", anchor: anchor.cpuPerTurn))
                    anchorRows.append(anchor.line(level: level, name: "nginx → stub", anchor: anchor.cpuPerTurn))
                } else {
                    anchorRows.append(serviceRow.line(level: level, name: "agent-service", anchor: nil))
                }
            }
            print("")
            for line in breakdowns { print(line) }
            // Per process, with Postgres's own CPU: printed for one instance too (the database's work per turn).
            print("")
            print(
                "| streams | CPU s / 1k turns, per instance | share of the instances' CPU | Postgres CPU s / 1k turns | pooler / proxy CPU s / 1k turns |"
            )
            print("|---:|---|---|---:|---|")
            for row in fleetRows { print(row) }
            print("")
            print(
                "| streams | path | added TTFC p50 / p99 (ms) | headers p50 / p99 (ms) | errors | CPU / turn (ms) | ratio to nginx | Postgres CPU / turn (ms) | statements / turn: top level / nested / plans |"
            )
            print("|---:|---|---|---|---:|---:|---:|---:|---|")
            for row in anchorRows { print(row) }
        } catch {
            await topology.stop()
            try await group.shutdownGracefully()
            throw error
        }
        await topology.stop()
        try await group.shutdownGracefully()
    }

    /// The largest number of streams open at the same moment, from the client's send and finish times.
    static func peakConcurrency(_ results: [StreamResult]) -> Int {
        var events: [(time: UInt64, change: Int)] = []
        for result in results {
            events.append((result.requestSent, 1))
            events.append((result.finishedAt, -1))
        }
        events.sort { $0.time == $1.time ? $0.change < $1.change : $0.time < $1.time }
        var open = 0
        var peak = 0
        for (_, change) in events {
            open += change
            peak = max(peak, open)
        }
        return peak
    }

    /// Runs `level` concurrent conversations of `turnsPerThread` turns and returns every stream's result.
    private func runLevel(
        _ level: Int, group: MultiThreadedEventLoopGroup, ports: [Int], wire: StreamWire = .service
    ) async throws -> [StreamResult] {
        // Open streams in batches every 10 ms (a sleep per stream would be limited by timer granularity).
        let batch = burst ? level : max(1, rampPerSecond / 100)
        return try await withThrowingTaskGroup(of: [StreamResult].self) { tasks in
            for index in 0..<level {
                let user = UUID().uuidString.lowercased()
                let thread = "bench-\(UUID().uuidString.prefix(13).lowercased())-\(index)"
                let turns = turnsPerThread
                tasks.addTask {
                    // Without a proxy, conversation i goes to instance i mod N; its later turns to the next ones.
                    var results: [StreamResult] = []
                    for turn in 1...turns {
                        let question = "benchmark question \(turn) of conversation \(index)"
                        let body = try JSONSerialization.data(
                            withJSONObject: wire == .service
                                ? [
                                    "question": question, "user_id": user, "user_timezone": "UTC", "thread_id": thread,
                                ]
                                : [
                                    "model": "claude-bench", "max_tokens": 1_024, "stream": true,
                                    "messages": [["role": "user", "content": question]],
                                ])
                        var buffer = ByteBuffer()
                        buffer.writeBytes(body)
                        var result = try await LoadClient.stream(
                            group: group, host: "127.0.0.1", port: ports[(index + turn - 1) % ports.count], body: buffer,
                            wire: wire
                        ).get()
                        result.userID = user
                        results.append(result)
                        if result.error != nil { break }
                    }
                    return results
                }
                if (index + 1) % batch == 0 && index + 1 < level { try await Task.sleep(for: .milliseconds(10)) }
            }
            var all: [StreamResult] = []
            for try await results in tasks { all += results }
            return all
        }
    }
}

extension ServiceBenchmark {
    /// The same level through nginx alone (one worker, `proxy_buffering off`), relaying the stub's stream to the load
    /// client byte for byte: what moving these bytes costs at the least on this machine, measured in the same run.
    fileprivate func runRelayBaseline(_ level: Int, group: MultiThreadedEventLoopGroup, stub: ChildProcess)
        async throws -> AnchorRow
    {
        let nginx = try await Nginx.start(
            upstreams: [stub.port], readTimeoutSeconds: 60, workerConnections: level * 2 + 200)
        do {
            let row = try await measureRelay(level, group: group, port: nginx.port) { processTreeCPU(nginx.pid) }
            await nginx.stop()
            return row
        } catch {
            await nginx.stop()
            throw error
        }
    }

    /// The same level through `agent-bench relay-floor`: the byte relay built from the service's own stack
    /// (Hummingbird, libcurl, one hop per chunk), with the service's allocator. Between nginx and the service: what
    /// the stack costs before any of the service's own work.
    ///
    /// With `database`, the relay also begins and finishes each turn there (the service's two durable round trips),
    /// and Postgres's CPU per turn is reported beside it.
    fileprivate func runRelayFloor(
        _ level: Int, group: MultiThreadedEventLoopGroup, stub: ChildProcess, database: String? = nil,
        postmaster: Int32? = nil
    ) async throws -> AnchorRow {
        let mimalloc = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"
        let relay = try await ChildProcess.start(
            executable: benchBinary ?? CommandLine.arguments[0],
            arguments: ["relay-floor", "--upstream-port", "\(stub.port)"]
                + (database.map { ["--database-url", $0] } ?? []),
            environment: FileManager.default.fileExists(atPath: mimalloc) ? ["LD_PRELOAD": mimalloc] : [:],
            readyPattern: #"relay listening on (\d+)"#)
        defer { relay.terminate() }
        let stats = ProcessStats(pid: relay.pid)
        return try await measureRelay(
            level, group: group, port: relay.port, cpu: { stats.cpuSeconds() },
            postgres: database == nil ? nil : postmaster.map { pid in { processTreeCPU(pid) } })
    }

    /// A warm-up of 20 streams through the relay on `port`, then the level, in Claude's own wire format; `cpu` (and
    /// `postgres`) read the CPU seconds whose difference over the level is reported per turn.
    private func measureRelay(
        _ level: Int, group: MultiThreadedEventLoopGroup, port: Int, cpu: () -> Double,
        postgres: (() -> Double)? = nil
    ) async throws -> AnchorRow {
        _ = try await runLevel(min(20, level), group: group, ports: [port], wire: .claude)
        let (cpuBefore, postgresBefore) = (cpu(), postgres?())
        let results = try await runLevel(level, group: group, ports: [port], wire: .claude)
        let (cpuAfter, postgresAfter) = (cpu(), postgres?())
        let completed = Double(results.filter(\.done).count)
        let perTurn = { (seconds: Double) in completed > 0 ? seconds / completed * 1_000 : .nan }
        return AnchorRow(
            results: results, cpuPerTurn: perTurn(cpuAfter - cpuBefore),
            postgresPerTurn: postgresAfter.flatMap { after in postgresBefore.map { perTurn(after - $0) } },
            statements: nil)
    }
}

/// One row of the table that puts the service beside the nginx anchor: the burst targets of issue 13.
struct AnchorRow {
    var ttfc: Percentiles
    var headers: Percentiles
    var errors: Int
    /// Milliseconds of CPU per completed turn.
    var cpuPerTurn: Double
    var postgresPerTurn: Double?
    var statements: String?

    init(results: [StreamResult], cpuPerTurn: Double, postgresPerTurn: Double?, statements: String?) {
        var added: [Double] = []
        var headers: [Double] = []
        var errors = 0
        for result in results {
            guard result.error == nil else {
                errors += 1
                continue
            }
            if let at = result.headersAt { headers.append(Double(at - result.requestSent) / 1e6) }
            if let first = result.firstChunkAt, let stamp = result.firstDeltaStamp,
                let received = result.stubReceivedStamp
            {
                added.append((Double(first - result.requestSent) - (Double(stamp) - Double(received))) / 1e6)
            }
        }
        self.ttfc = Percentiles(added)
        self.headers = Percentiles(headers)
        self.errors = errors
        self.cpuPerTurn = cpuPerTurn
        self.postgresPerTurn = postgresPerTurn
        self.statements = statements
    }

    func line(level: Int, name: String, anchor: Double?) -> String {
        let f = { (value: Double) in String(format: "%.2f", value) }
        let ratio = anchor.map { $0 > 0 ? String(format: "%.1f×", cpuPerTurn / $0) : "-" } ?? "-"
        return
            "| \(level) | \(name) | \(f(ttfc.value(50))) / \(f(ttfc.value(99))) | \(f(headers.value(50))) / \(f(headers.value(99))) | \(errors) | \(f(cpuPerTurn)) | \(ratio) | \(postgresPerTurn.map(f) ?? "-") | \(statements ?? "-") |"
    }
}

/// One table row.
struct LevelReport {
    var row: String
    var breakdown: String
    var errors: [String: Int]

    init(
        level: Int, results: [StreamResult], elapsed: Double, serviceCPU: Double, peakRSS: Int, roundTrips: Double,
        repository: ThreadRepository
    ) async throws {
        var added: [Double] = []
        var beforeClaude: [Double] = []
        var relayFirst: [Double] = []
        var gaps: [Double] = []
        var errors: [String: Int] = [:]
        var completed = 0
        for result in results {
            if let error = result.error {
                errors[String(error.prefix(60)), default: 0] += 1
                continue
            }
            completed += 1
            if let first = result.firstChunkAt, let stamp = result.firstDeltaStamp,
                let received = result.stubReceivedStamp
            {
                let client = Double(first - result.requestSent)
                let stub = Double(stamp) - Double(received)
                added.append((client - stub) / 1e6)
                // Where the added time goes: before the request reaches Claude (validation, begin-turn, curl), and
                // from the first delta leaving the stub to its arrival at the client (the relay).
                beforeClaude.append((Double(received) - Double(result.requestSent)) / 1e6)
                relayFirst.append((Double(first) - Double(stamp)) / 1e6)
            }
            gaps += result.deltaDelays.map { Double($0) / 1e6 }
        }
        // Every completed turn must be in the database with exactly the streamed text.
        var exact = 0
        var mismatched = 0
        for result in results where result.done {
            guard let id = result.turnID.flatMap(UUID.init(uuidString:)),
                let user = result.userID.flatMap(UUID.init(uuidString:))
            else { continue }
            let turn = try await repository.turn(userID: user, id: id)
            if turn?.status == .completed && turn?.reply == result.text { exact += 1 } else { mismatched += 1 }
        }
        let ttfc = Percentiles(added)
        let pre = Percentiles(beforeClaude)
        let relay = Percentiles(relayFirst)
        let gap = Percentiles(gaps)
        let f = { (value: Double) in String(format: "%.2f", value) }
        let errorText = errors.isEmpty ? "0" : "\(errors.values.reduce(0, +))"
        let perThousand = completed > 0 ? serviceCPU / Double(completed) * 1_000 : .nan
        let trips = completed > 0 ? roundTrips / Double(completed) : .nan
        row =
            "| \(level) | \(f(ttfc.value(50))) / \(f(ttfc.value(90))) / \(f(ttfc.value(99))) / \(f(ttfc.max)) | \(f(gap.value(50))) / \(f(gap.value(99))) | \(String(format: "%.0f", Double(completed) / elapsed)) | \(errorText) | \(String(format: "%.2f", perThousand)) | \(peakRSS >> 20) | \(String(format: "%.2f", trips)) | \(exact)/\(completed)\(mismatched > 0 ? " (\(mismatched) differ)" : "") |"
        self.errors = errors
        breakdown =
            "#   \(level): added TTFC = before Claude p50 \(f(pre.value(50))) / p99 \(f(pre.value(99))) ms + relay of the first delta p50 \(f(relay.value(50))) / p99 \(f(relay.value(99))) ms"
    }
}

/// The service's counters, from its /metrics.
enum Metrics {
    struct Sample {
        var roundTrips: Double
        /// Cumulative counts of the service's admission histogram, by upper bound in seconds.
        var admission: [(bound: Double, count: Double)]

        /// The bucket bound under which `p` percent of the admissions since `earlier` fall ("≤ x ms").
        func admissionPercentile(_ p: Double, since earlier: Sample) -> String {
            let deltas = zip(admission, earlier.admission).map { ($0.bound, $0.count - $1.count) }
            guard let total = deltas.last?.1, total > 0 else { return "-" }
            let bound = deltas.first { $0.1 >= total * p / 100 }?.0 ?? .infinity
            return bound.isFinite ? "≤ \(String(format: "%g", bound * 1_000)) ms" : "> 10 s"
        }
    }

    static func scrape(port: Int) async throws -> Sample {
        let text = try await HTTPGet.text(port: port, path: "/metrics")
        var trips = 0.0
        var admission: [(Double, Double)] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("agent_db_round_trips_total") {
                trips = Double(line.split(separator: " ").last ?? "") ?? 0
            } else if line.hasPrefix("agent_turn_admission_seconds_bucket{le=\""),
                let open = line.firstIndex(of: "\""), let close = line.firstIndex(of: "}")
            {
                let bound = line[line.index(after: open)..<line.index(before: close)]
                admission.append((Double(bound) ?? .infinity, Double(line.split(separator: " ").last ?? "") ?? 0))
            }
        }
        return Sample(roundTrips: trips, admission: admission)
    }
}

extension String {
    func ifEmpty(_ replacement: String) -> String { isEmpty ? replacement : self }
}
