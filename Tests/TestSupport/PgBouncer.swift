import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real PgBouncer (`pool_mode = transaction` by default) in front of the test cluster, on a free loopback port.
///
/// Config and auth file live in a temp folder; as root it runs as the `postgres` OS user (like the server, whose
/// socket folder only that user may enter). It authenticates clients with `scram-sha-256`, the cluster's method,
/// from the superuser's password in the auth file, and reaches every database of the cluster (`* =`), so each test's
/// fresh database is there too. `stop()` ends it.
public final class PgBouncer: Sendable {
    public let port: Int
    public let mode: String
    let process: SpawnedProcess
    let folder: ScratchFolder
    /// The direct conninfo's keywords, with host and port replaced by the pooler's.
    private let direct: [String: String]

    /// The PgBouncer binary (Debian's package puts it in /usr/sbin).
    public static var binary: String? {
        ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Starts PgBouncer for the cluster behind `conninfo` (a key=value conninfo of the test cluster).
    public static func start(
        for conninfo: String, mode: String = "transaction", poolSize: Int = 20
    ) async throws -> PgBouncer {
        guard let binary else {
            throw SpawnError("pgbouncer is not installed; run scripts/ensure-test-deps.sh (apt-get install pgbouncer)")
        }
        let keywords = Self.keywords(conninfo)
        guard let socket = keywords["host"], let password = keywords["password"] else {
            throw SpawnError("the test cluster's conninfo has no host or password")
        }
        let user = keywords["user"] ?? "postgres"
        let folder = try ScratchFolder(prefix: "agent-pgbouncer", ownedByPostgres: true)
        var lastError: any Error = SpawnError("pgbouncer did not start")
        for _ in 0..<3 {
            let port = try FreePort.pick()
            try folder.write("userlist.txt", "\"\(user)\" \"\(password)\"\n", ownedByPostgres: true)
            try folder.write(
                "pgbouncer.ini",
                """
                [databases]
                * = host=\(socket) port=\(keywords["port"] ?? "5432")

                [pgbouncer]
                listen_addr = 127.0.0.1
                listen_port = \(port)
                unix_socket_dir =
                auth_type = scram-sha-256
                auth_file = \(folder.path)/userlist.txt
                pool_mode = \(mode)
                default_pool_size = \(poolSize)
                max_client_conn = 5000
                max_db_connections = \(poolSize)
                ignore_startup_parameters = extra_float_digits
                logfile = \(folder.path)/pgbouncer.log
                pidfile = \(folder.path)/pgbouncer.pid
                log_connections = 0
                log_disconnections = 0
                server_check_delay = 0

                """, ownedByPostgres: true)
            let process: SpawnedProcess
            if geteuid() == 0 {
                process = try SpawnedProcess(
                    executable: "/usr/bin/setpriv",
                    arguments: [
                        "--reuid=postgres", "--regid=postgres", "--init-groups", "--", binary,
                        folder.path + "/pgbouncer.ini",
                    ],
                    environment: ["PATH": "/usr/sbin:/usr/bin:/bin"], standardError: .null)
            } else {
                process = try SpawnedProcess(
                    executable: binary, arguments: [folder.path + "/pgbouncer.ini"],
                    environment: ["PATH": "/usr/sbin:/usr/bin:/bin"])
            }
            do {
                try await FreePort.waitUntilAccepting(port, process: process, timeout: .seconds(15)) {
                    folder.read("pgbouncer.log")
                }
                return PgBouncer(port: port, mode: mode, process: process, folder: folder, direct: keywords)
            } catch {
                lastError = error
                process.send(SIGKILL)
                _ = try? await process.waitForExit()
            }
        }
        folder.remove()
        throw lastError
    }

    private init(port: Int, mode: String, process: SpawnedProcess, folder: ScratchFolder, direct: [String: String]) {
        self.port = port
        self.mode = mode
        self.process = process
        self.folder = folder
        self.direct = direct
    }

    /// The conninfo of `database` through the pooler (TCP on loopback, same user and password).
    public func conninfo(database: String) -> String {
        "host=127.0.0.1 port=\(port) user=\(direct["user"] ?? "postgres") password=\(direct["password"] ?? "") "
            + "dbname=\(database)"
    }

    /// The conninfo `direct` (of the cluster) rewritten to go through the pooler.
    public func conninfo(for direct: String) -> String {
        conninfo(database: Self.keywords(direct)["dbname"] ?? "postgres")
    }

    /// Its process id (for CPU figures).
    public var pid: Int32 { process.processIdentifier }

    /// PgBouncer's log so far (for failure messages).
    public var log: String { folder.read("pgbouncer.log") }

    /// SIGINT (PgBouncer's clean shutdown), SIGKILL if it lingers; removes its folder.
    public func stop() async {
        process.interrupt()
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            process.send(SIGKILL)
            _ = try? await process.waitForExit()
        }
        folder.remove()
    }

    /// The keywords of a simple key=value conninfo (what the test cluster hands out: no quoting, no spaces).
    static func keywords(_ conninfo: String) -> [String: String] {
        var result: [String: String] = [:]
        for item in conninfo.split(separator: " ") {
            let parts = item.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
        }
        return result
    }
}
