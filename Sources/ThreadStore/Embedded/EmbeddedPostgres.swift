public import Foundation
public import Logging

/// A private PostgreSQL cluster for local development and tests, started on demand from the server package.
///
/// `start()` initializes the cluster under `directory` the first time (initdb, trust auth, UTF-8, C locale; as the
/// `postgres` OS user when running as root), starts it with `pg_ctl` listening only on a Unix socket in a folder of
/// its own, creates the database and returns a conninfo. Later calls and other processes find it running and just
/// connect; concurrent first starts are serialized with an `flock`. The cluster keeps running after the process
/// exits; `stop()` ends it. Blocking: call it from a thread of your own or through `startDetached()`.
public struct EmbeddedPostgres: Sendable {
    /// The folder holding the cluster (`data/`, `socket/`, `server.log`).
    public private(set) var directory: URL
    /// The database created and returned by `start()`.
    public var databaseName: String
    /// Extra `postgresql.conf` lines written at initdb time (tests use `fsync = off`).
    public var extraSettings: [String]
    let logger: Logger

    static let port = 5432

    /// A cluster under `directory` (default `.agent-service/postgres` in the working directory).
    public init(
        directory: URL = URL(fileURLWithPath: ".agent-service/postgres"), databaseName: String = "agent_service",
        extraSettings: [String] = [], logger: Logger
    ) {
        self.directory = directory.standardizedFileURL
        self.databaseName = databaseName
        self.extraSettings = extraSettings
        self.logger = logger
    }

    var dataDirectory: String { directory.appendingPathComponent("data").path }
    var logFile: String { directory.appendingPathComponent("server.log").path }
    var lockFile: String { directory.path + ".lock" }

    /// The folder holding the server's socket: inside `directory`, or a short one under /tmp when that path would
    /// exceed the 107-byte limit of Unix socket paths.
    var socketDirectory: String {
        let preferred = directory.appendingPathComponent("socket").path
        if (preferred + "/.s.PGSQL.\(Self.port)").utf8.count < 100 { return preferred }
        return "/tmp/agent-service-\(Self.shortHash(directory.path))"
    }

    /// The conninfo of `database` in this cluster.
    public func conninfo(database: String? = nil) -> String {
        "host=\(socketDirectory) port=\(Self.port) user=postgres dbname=\(database ?? databaseName)"
    }

    /// A running cluster: how to connect and where it actually lives (a fallback folder when running as root and
    /// the `postgres` OS user cannot reach `directory`).
    public struct Running: Sendable {
        public var conninfo: String
        public var directory: URL
    }

    /// Runs `start()` on a thread of its own so the cooperative pool is not blocked; returns the conninfo.
    public func startDetached() async throws -> String {
        try await startDetachedReportingDirectory().conninfo
    }

    /// Like `startDetached()`, also telling where the cluster lives.
    public func startDetachedReportingDirectory() async throws -> Running {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try self.startReportingDirectory() }) }
            thread.name = "embedded-postgres"
            thread.start()
        }
    }

    /// Initializes (first time), starts (when not running) and returns the conninfo of `databaseName`. Blocking.
    public func start() throws -> String {
        try startReportingDirectory().conninfo
    }

    func startReportingDirectory() throws -> Running {
        var cluster = self
        if Self.isRoot { cluster = try cluster.withTraversableDirectory() }
        return Running(conninfo: try cluster.startHere(), directory: cluster.directory)
    }

    /// Stops the cluster (`pg_ctl stop`); `immediate` skips the checkpoint, as for throwaway test clusters.
    public func stop(immediate: Bool = false) throws {
        var cluster = self
        if Self.isRoot, !Self.canPostgresUserWrite(directory.path) { cluster.directory = fallbackDirectory }
        guard FileManager.default.fileExists(atPath: cluster.dataDirectory + "/PG_VERSION") else { return }
        let tools = try Self.serverBinDirectory()
        _ = try cluster.runServerTool(
            "\(tools)/pg_ctl", ["stop", "-D", cluster.dataDirectory, "-m", immediate ? "immediate" : "fast", "-w"],
            allowFailure: true)
    }

    var fallbackDirectory: URL {
        URL(fileURLWithPath: "/var/tmp/agent-service-\(Self.shortHash(directory.path))/postgres")
    }

    private func withTraversableDirectory() throws -> EmbeddedPostgres {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.chownToPostgres(directory.path)
        if Self.canPostgresUserWrite(directory.path) { return self }
        var moved = self
        moved.directory = fallbackDirectory
        logger.notice(
            "the postgres OS user cannot reach the cluster folder; using a fallback",
            metadata: ["wanted": "\(directory.path)", "using": "\(moved.directory.path)"])
        try FileManager.default.createDirectory(at: moved.directory, withIntermediateDirectories: true)
        try Self.chownToPostgres(moved.directory.path)
        return moved
    }

    private func startHere() throws -> String {
        let tools = try Self.serverBinDirectory()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if Self.isRoot { try Self.chownToPostgres(directory.path) }

        let lock = open(lockFile, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw failure("cannot open the lock file \(lockFile)") }
        defer { close(lock) }
        guard flock(lock, LOCK_EX) == 0 else { throw failure("cannot lock \(lockFile)") }
        defer { flock(lock, LOCK_UN) }

        let fileManager = FileManager.default
        if !fileManager.fileExists(atPath: dataDirectory + "/PG_VERSION") {
            if fileManager.fileExists(atPath: dataDirectory) { try fileManager.removeItem(atPath: dataDirectory) }
            logger.notice("initializing a local PostgreSQL cluster", metadata: ["directory": "\(directory.path)"])
            _ = try runServerTool(
                "\(tools)/initdb",
                ["-D", dataDirectory, "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres"])
            var settings = [
                "listen_addresses = ''", "unix_socket_directories = '\(socketDirectory)'", "port = \(Self.port)",
            ]
            settings += extraSettings
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dataDirectory + "/postgresql.conf"))
            handle.seekToEndOfFile()
            handle.write(Data(("\n# agent-service\n" + settings.joined(separator: "\n") + "\n").utf8))
            try handle.close()
        }
        try fileManager.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        if Self.isRoot { try Self.chownToPostgres(socketDirectory) }

        let status = try runServerTool("\(tools)/pg_ctl", ["status", "-D", dataDirectory], allowFailure: true)
        if status.exitCode != 0 {
            logger.info("starting the local PostgreSQL cluster", metadata: ["directory": "\(directory.path)"])
            let started = try runServerTool(
                "\(tools)/pg_ctl", ["start", "-D", dataDirectory, "-l", logFile, "-w", "-t", "60"], allowFailure: true)
            if started.exitCode != 0 {
                throw failure(
                    "pg_ctl could not start the cluster (\(lastLogLine() ?? "no log")); see \(logFile)",
                    detail: started.output)
            }
        }
        try createDatabaseIfMissing()
        return conninfo()
    }

    private func createDatabaseIfMissing() throws {
        let counters = DatabaseCounters()
        let connection = try Connector.open(
            DatabaseConfiguration(conninfo: conninfo(database: "postgres"), applicationName: "agent-service-setup"),
            counters: counters)
        let exists = try connection.query("SELECT 1 FROM pg_database WHERE datname = \(databaseName)")
        if exists.rows.isEmpty {
            let quoted = "\"" + databaseName.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            try connection.query(SQLQuery(unsafeSQL: "CREATE DATABASE \(quoted)"))
        }
    }

    /// The server log's last line, which names the reason a start failed (e.g. a port or permission problem).
    private func lastLogLine() -> String? {
        guard let text = try? String(contentsOfFile: logFile, encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n")
        // The reason is usually a FATAL line just before the shutdown lines.
        let reason = lines.last { $0.contains("FATAL") || $0.contains("PANIC") } ?? lines.last
        return reason.map { String($0.suffix(300)) }
    }

    private func failure(_ message: String, detail: String? = nil) -> StoreError {
        StoreError(.embeddedPostgres, "local PostgreSQL: \(message)", detail: detail)
    }

    // MARK: - Processes

    typealias ToolOutput = Subprocess.Output

    /// Runs a server binary, as the `postgres` OS user when we are root (initdb and postgres refuse root).
    @discardableResult
    func runServerTool(_ path: String, _ arguments: [String], allowFailure: Bool = false) throws -> ToolOutput {
        let result =
            Self.isRoot
            ? try Subprocess.run("/usr/sbin/runuser", ["-u", "postgres", "--", path] + arguments)
            : try Subprocess.run(path, arguments)
        if result.exitCode != 0 && !allowFailure {
            let name = (path as NSString).lastPathComponent
            throw failure("\(name) failed (exit \(result.exitCode))", detail: result.output)
        }
        return result
    }

    static var isRoot: Bool { geteuid() == 0 }

    /// The PostgreSQL server binaries: `pg_config --bindir` when it has them, else the newest
    /// `/usr/lib/postgresql/*/bin`.
    static func serverBinDirectory() throws -> String {
        let fileManager = FileManager.default
        var candidates: [String] = []
        if let bindir = try? captureOutput("/usr/bin/pg_config", ["--bindir"]) { candidates.append(bindir) }
        let root = "/usr/lib/postgresql"
        let versions = ((try? fileManager.contentsOfDirectory(atPath: root)) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        candidates += versions.map { "\(root)/\($0)/bin" }
        candidates += ["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"]
        for candidate in candidates
        where fileManager.isExecutableFile(atPath: candidate + "/initdb")
            && fileManager.isExecutableFile(atPath: candidate + "/pg_ctl")
        {
            return candidate
        }
        throw StoreError(
            .embeddedPostgres,
            "local PostgreSQL: server binaries (initdb, pg_ctl) not found; install them with "
                + "`apt-get install postgresql` or set DATABASE_URL")
    }

    private static func captureOutput(_ path: String, _ arguments: [String]) throws -> String {
        let result = try Subprocess.run(path, arguments)
        guard result.exitCode == 0 else { throw StoreError(.embeddedPostgres, "\(path) failed") }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func chownToPostgres(_ path: String) throws {
        guard let user = getpwnam("postgres") else {
            throw StoreError(
                .embeddedPostgres,
                "local PostgreSQL: running as root but there is no `postgres` OS user to run the server as")
        }
        guard chown(path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
            throw StoreError(.embeddedPostgres, "local PostgreSQL: cannot hand \(path) to the postgres user")
        }
    }

    /// Whether the `postgres` OS user can reach and write `path` (every ancestor must be searchable).
    static func canPostgresUserWrite(_ path: String) -> Bool {
        let result = try? Subprocess.run(
            "/usr/sbin/runuser", ["-u", "postgres", "--", "/usr/bin/test", "-w", path, "-a", "-x", path])
        return result?.exitCode == 0
    }

    /// FNV-1a of `text`, 12 hex digits: stable across processes, unlike `hashValue`.
    static func shortHash(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(String(hash, radix: 16).suffix(12))
    }
}
