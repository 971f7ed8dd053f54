import ClaudeStub
import Foundation
import Synchronization
import TestSupport
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

/// Several real `agent-service serve` processes on one Postgres, the way production runs them: PgBouncer in
/// transaction mode between them and the database, nginx round-robin in front, the Claude stub in this process.
///
/// Each instance's `DATABASE_URL` goes through PgBouncer; its `DATABASE_LISTEN_URL` goes straight to Postgres
/// (`LISTEN` needs a session of its own, which a transaction pooler never gives). Instances listen on ports fixed at
/// start, so one can be killed or stopped and started again where nginx expects it. `stop()` ends everything.
final class Fleet: Sendable {
    let conninfo: String
    let database: Database
    let stub: ClaudeStub
    let pooler: PgBouncer
    let proxy: Nginx
    let ports: [Int]
    let environment: [String: String]
    private let running: Mutex<[ServiceProcess?]>

    var repository: ThreadRepository { ThreadRepository(database: database) }
    var proxyPort: Int { proxy.port }

    /// The settings every instance gets: short lease (the minimum, 10 s) and pings (1 s) so that crash recovery and
    /// nginx's read timeout (3 s) are seen within a test.
    static let instanceSettings: [String: String] = [
        "TURN_LEASE_SECONDS": "10", "SSE_PING_SECONDS": "1", "SHUTDOWN_GRACE_SECONDS": "15",
        "MAX_ACTIVE_TURNS_PER_USER": "20", "DATABASE_POOL_SIZE": "4", "AUTO_MIGRATE": "false", "LOG_LEVEL": "notice",
    ]

    static func start(instances: Int = 3, readTimeoutSeconds: Int = 3, extra: [String: String] = [:]) async throws
        -> Fleet
    {
        let (conninfo, database) = try await TestPostgres.freshDatabase(poolSize: 2)
        let stub = ClaudeStub(logger: .quiet)
        try await stub.start(host: "127.0.0.1", port: 0)
        let pooler: PgBouncer
        do { pooler = try await PgBouncer.start(for: conninfo, mode: "transaction") } catch {
            await stub.stop()
            await database.close()
            throw error
        }
        let ports = try (0..<instances).map { _ in try FreePort.pick() }
        let environment = instanceSettings.merging([
            "DATABASE_URL": pooler.conninfo(for: conninfo), "DATABASE_LISTEN_URL": conninfo,
            "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": stub.baseURL,
        ]) { $1 }.merging(extra) { $1 }
        let proxy: Nginx
        do { proxy = try await Nginx.start(upstreams: ports, readTimeoutSeconds: readTimeoutSeconds) } catch {
            await pooler.stop()
            await stub.stop()
            await database.close()
            throw error
        }
        let fleet = Fleet(
            conninfo: conninfo, database: database, stub: stub, pooler: pooler, proxy: proxy, ports: ports,
            environment: environment)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in ports.indices { group.addTask { try await fleet.startInstance(index) } }
                try await group.waitForAll()
            }
        } catch {
            await fleet.stop()
            throw error
        }
        return fleet
    }

    private init(
        conninfo: String, database: Database, stub: ClaudeStub, pooler: PgBouncer, proxy: Nginx, ports: [Int],
        environment: [String: String]
    ) {
        self.conninfo = conninfo
        self.database = database
        self.stub = stub
        self.pooler = pooler
        self.proxy = proxy
        self.ports = ports
        self.environment = environment
        running = Mutex(Array(repeating: nil, count: ports.count))
    }

    /// The running process of instance `index` (nil while it is down).
    func instance(_ index: Int) -> ServiceProcess? { running.withLock { $0[index] } }

    /// Starts instance `index` on its port (again, after a kill or a stop), with its own spool folder.
    func startInstance(_ index: Int) async throws {
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("agent-spool-\(UUID().uuidString)")
        let process = try await ServiceProcess.start(
            environment: environment.merging(["PORT": "\(ports[index])", "SPOOL_DIR": spool.path]) { $1 })
        running.withLock { $0[index] = process }
    }

    /// SIGKILL: the instance dies with its turns in flight.
    func kill(_ index: Int) async {
        guard let process = running.withLock({ $0[index] }) else { return }
        process.process.send(SIGKILL)
        _ = await process.waitForExit(timeout: .seconds(10))
        running.withLock { $0[index] = nil }
    }

    /// SIGTERM and waits for the drain; the exit status.
    @discardableResult
    func terminate(_ index: Int, timeout: Duration = .seconds(30)) async -> Int32? {
        guard let process = running.withLock({ $0[index] }) else { return nil }
        process.process.terminate()
        let status = await process.waitForExit(timeout: timeout)
        running.withLock { $0[index] = nil }
        return status
    }

    /// Which instance answered a response that went through nginx (its `X-Upstream`; the last one tried).
    func servedBy(_ headers: [String: String]) -> Int? {
        guard let addresses = headers["x-upstream"],
            let last = addresses.split(separator: ",").last?.trimmingCharacters(in: .whitespaces),
            let port = last.split(separator: ":").last.flatMap({ Int($0) })
        else { return nil }
        return ports.firstIndex(of: port)
    }

    /// Everything down: the instances (SIGTERM, drained), nginx, PgBouncer, the stub, the test's pool.
    func stop() async {
        await withTaskGroup(of: Void.self) { group in
            for index in ports.indices { group.addTask { await self.terminate(index) } }
        }
        await proxy.stop()
        await pooler.stop()
        await stub.stop()
        await database.close()
    }

    /// Runs `body` on a fresh fleet and always stops it.
    static func run(
        instances: Int = 3, extra: [String: String] = [:], _ body: (Fleet) async throws -> Void
    ) async throws {
        let fleet = try await start(instances: instances, extra: extra)
        do { try await body(fleet) } catch {
            await fleet.stop()
            throw error
        }
        await fleet.stop()
    }
}
