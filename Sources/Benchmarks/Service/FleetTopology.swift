import Foundation
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// `BenchTopology` with more instances: N `serve` processes on one database, optionally through PgBouncer in
/// transaction mode (`DATABASE_LISTEN_URL` stays direct) and behind nginx round-robin, as `Fleet` runs them in tests.
struct FleetTopology {
    let base: BenchTopology
    let services: [ChildProcess]
    let pooler: PgBouncer?
    let proxy: Nginx?

    /// Where the load goes: nginx, or each instance in turn.
    var ports: [Int] { proxy.map { [$0.port] } ?? services.map(\.port) }

    static func start(
        instances: Int, pooler usePooler: Bool, proxy useProxy: Bool, maxStreams: Int, binary: String,
        benchBinary: String, stubArguments: [String], postgresSettings: [String], statementStatistics: Bool = false,
        environment: [String: String]
    ) async throws -> FleetTopology {
        // The first instance comes up with BenchTopology on the direct connection (it migrates); the pooler is put
        // in front for the others, and the first is started again through it.
        let base = try await BenchTopology.start(
            binary: binary, benchBinary: benchBinary, stubArguments: stubArguments, postgresSettings: postgresSettings,
            statementStatistics: statementStatistics, environment: environment)
        var pooler: PgBouncer?
        var proxy: Nginx?
        var services: [ChildProcess] = []
        do {
            var through = environment
            if usePooler {
                let started = try await PgBouncer.start(for: base.database.conninfo, mode: "transaction", poolSize: 40)
                pooler = started
                through["DATABASE_URL"] = started.conninfo(for: base.database.conninfo)
                through["DATABASE_LISTEN_URL"] = base.database.conninfo
                through["AUTO_MIGRATE"] = "false"
                base.service.terminate()
            } else {
                services.append(base.service)
            }
            while services.count < instances {
                services.append(try await base.startAnotherService(binary: binary, environment: through))
            }
            if useProxy {
                proxy = try await Nginx.start(
                    upstreams: services.map(\.port), readTimeoutSeconds: 60, workerConnections: maxStreams * 2 + 200)
            }
        } catch {
            for service in services { service.terminate() }
            await pooler?.stop()
            base.stop()
            throw error
        }
        return FleetTopology(base: base, services: services, pooler: pooler, proxy: proxy)
    }

    /// The cluster's postmaster (its backends are its children), from `postmaster.pid`.
    var postmasterPID: Int32? {
        guard let directory = base.database.directory,
            let text = try? String(contentsOfFile: directory.path + "/data/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first
        else { return nil }
        return Int32(first)
    }

    func stop() async {
        await proxy?.stop()
        for service in services { service.terminate() }
        await pooler?.stop()
        base.stop()
    }
}

/// CPU seconds of a process and its children: its own, its reaped children's (exited backends), and its live
/// children's (running backends, nginx's worker).
func processTreeCPU(_ pid: Int32) -> Double {
    func fields(_ pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }
    let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
    // After "(comm)": ppid is field 4, utime 14, stime 15, cutime 16, cstime 17 (index = field - 3).
    func total(_ f: [Substring]) -> Double {
        guard f.count > 14 else { return 0 }
        return [11, 12, 13, 14].compactMap { Double(f[$0]) }.reduce(0, +) / tick
    }
    guard let own = fields(pid) else { return 0 }
    var sum = total(own)
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    for name in names {
        guard let child = Int32(name), child != pid, let f = fields(child), f.count > 1, Int32(f[1]) == pid else {
            continue
        }
        sum += total(f)
    }
    return sum
}
