import CPostgres
public import Foundation
public import Logging

/// A private PostgreSQL cluster for local development and tests, started on demand from the server package.
///
/// `start()` initializes the cluster under `directory` the first time (initdb with `scram-sha-256` and a generated
/// password, UTF-8, C locale; as the `postgres` OS user when running as root), starts it with `pg_ctl` listening
/// only on a Unix socket in a `0700` folder of its own, creates the database and returns a conninfo that carries the
/// password. The password is kept in a `0600` file next to the data folder, readable only by the user running the
/// service (see `ClusterAccess`). A cluster made by an earlier version (which trusted every local user) is made
/// private on its next start. Later calls and other processes find it running and just connect; concurrent first
/// starts are serialized with an `flock`. The cluster keeps running after the process exits; `stop()` ends it.
/// Blocking: call it from a thread of your own or through `startDetached()`.
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
    /// The superuser's password, `0600`, owned by the user running the service.
    var passwordFile: String { directory.appendingPathComponent("password").path }

    /// The folder holding the server's socket: inside `directory`, or a short one under /tmp when that path would
    /// exceed the 107-byte limit of Unix socket paths.
    var socketDirectory: String {
        usesShortSocketFolder
            ? "/tmp/agent-service-\(Self.shortHash(directory.path))" : directory.appendingPathComponent("socket").path
    }

    var usesShortSocketFolder: Bool {
        (directory.appendingPathComponent("socket").path + "/.s.PGSQL.\(Self.port)").utf8.count >= 100
    }

    /// The conninfo of `database` in this cluster, with the password once the cluster has one.
    public func conninfo(database: String? = nil) -> String {
        let cluster = located
        var conninfo =
            "host=\(cluster.socketDirectory) port=\(Self.port) user=postgres dbname=\(database ?? databaseName)"
        if let password = cluster.storedPassword() { conninfo += " password=\(password)" }
        return conninfo
    }

    /// The password from `passwordFile`, or nil when it is missing or not one this code wrote.
    func storedPassword() -> String? {
        guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else { return nil }
        let password = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return ClusterAccess.isValidPassword(password) ? password : nil
    }

    /// This cluster, or its fallback folder when a root process had to move it there (see `fallbackDirectory`).
    var located: EmbeddedPostgres {
        let fileManager = FileManager.default
        guard Self.isRoot, !fileManager.fileExists(atPath: dataDirectory + "/PG_VERSION") else { return self }
        var moved = self
        moved.directory = fallbackDirectory
        return fileManager.fileExists(atPath: moved.dataDirectory + "/PG_VERSION") ? moved : self
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
        try await Self.detached { try self.startReportingDirectory() }
    }

    /// Runs blocking `work` (initdb, pg_ctl) on a thread of its own, off Swift's cooperative pool.
    private static func detached<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try work() }) }
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

    /// Runs `stop(immediate:)` on a thread of its own so the cooperative pool is not blocked.
    public func stopDetached(immediate: Bool = false) async throws {
        try await Self.detached { try self.stop(immediate: immediate) }
    }

    /// Stops the cluster (`pg_ctl stop`); `immediate` skips the checkpoint, as for throwaway test clusters. Blocking.
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
        try PrivateDirectory.prepare(directory.path, shared: false, serverOwned: true)
        if Self.canPostgresUserWrite(directory.path) { return self }
        var moved = self
        moved.directory = fallbackDirectory
        logger.notice(
            "the postgres OS user cannot reach the cluster folder; using a fallback",
            metadata: ["wanted": "\(directory.path)", "using": "\(moved.directory.path)"])
        // /var/tmp is shared: its folder is checked, so another user cannot have prepared it for us.
        let sharedParent = fallbackDirectory.deletingLastPathComponent().path
        try PrivateDirectory.prepare(sharedParent, shared: true, serverOwned: true)
        return moved
    }

    private func startHere() throws -> String {
        let tools = try Self.serverBinDirectory()
        try PrivateDirectory.prepare(directory.path, shared: false, serverOwned: true)

        let lock = open(lockFile, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard lock >= 0 else { throw failure("cannot open the lock file \(lockFile)") }
        defer { close(lock) }
        guard flock(lock, LOCK_EX) == 0 else { throw failure("cannot lock \(lockFile)") }
        defer { flock(lock, LOCK_UN) }

        if !FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") { try initialize(tools: tools) }
        try PrivateDirectory.prepare(socketDirectory, shared: usesShortSocketFolder, serverOwned: true)
        guard chmod(dataDirectory, 0o700) == 0 else {
            throw failure("cannot make \(dataDirectory) private (mode 0700)")
        }
        try addPrivateSettingsIfMissing()
        guard let rules = try? String(contentsOfFile: hbaFile, encoding: .utf8) else {
            throw failure("cannot read \(hbaFile); is the cluster folder damaged?")
        }
        let trusting = ClusterAccess.allowsTrust(rules)
        let stored = storedPassword()
        if stored == nil && !trusting {
            throw failure(
                "the password file \(passwordFile) is missing or damaged, and the cluster admits only connections with "
                    + "a password; restore the file, or remove \(directory.path) to start over (its data is lost)")
        }

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
        if trusting { try lockDown(tools: tools, password: stored ?? writeNewPassword()) }
        try createDatabaseIfMissing()
        return conninfo()
    }

    var hbaFile: String { dataDirectory + "/pg_hba.conf" }

    /// initdb with a generated password and password authentication, then the private settings and rules.
    private func initialize(tools: String) throws {
        let fileManager = FileManager.default
        if fileManager.fileExists(atPath: dataDirectory) { try fileManager.removeItem(atPath: dataDirectory) }
        logger.notice("initializing a local PostgreSQL cluster", metadata: ["directory": "\(directory.path)"])
        let password = try writeNewPassword()
        // initdb reads the password from a file, which the postgres OS user must be able to read; it lives in the
        // 0700 cluster folder only while initdb runs.
        let passwordForInitdb = directory.appendingPathComponent("initdb-password").path
        try Self.writePrivateFile(passwordForInitdb, password + "\n", serverOwned: true)
        defer { unlink(passwordForInitdb) }
        _ = try runServerTool(
            "\(tools)/initdb",
            [
                "-D", dataDirectory, "--auth=scram-sha-256", "--pwfile=\(passwordForInitdb)", "--encoding=UTF8",
                "--locale=C", "-U", "postgres",
            ])
        let settings =
            ClusterAccess.privateSettings + [
                "unix_socket_directories = '\(socketDirectory)'", "port = \(Self.port)",
            ] + extraSettings
        try appendSettings(settings)
        try Self.writePrivateFile(hbaFile, ClusterAccess.hostBasedAuthentication, serverOwned: true)
    }

    /// Clusters of earlier versions lack `unix_socket_permissions`; it takes effect at the next server start (the
    /// socket's folder is already `0700` meanwhile).
    private func addPrivateSettingsIfMissing() throws {
        let path = dataDirectory + "/postgresql.conf"
        guard let configuration = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw failure("cannot read \(path); is the cluster folder damaged?")
        }
        if !ClusterAccess.hasPrivateSettings(configuration) { try appendSettings(ClusterAccess.privateSettings) }
    }

    private func appendSettings(_ settings: [String]) throws {
        // Appending keeps the file's owner (the postgres OS user when we are root).
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dataDirectory + "/postgresql.conf"))
        handle.seekToEndOfFile()
        handle.write(Data(("\n# agent-service\n" + settings.joined(separator: "\n") + "\n").utf8))
        try handle.close()
    }

    /// Makes a cluster of an earlier version private, while its `trust` rules still let us in: sets the superuser's
    /// password (sent as a SCRAM verifier, so the plain text reaches neither the server nor its log), replaces
    /// `pg_hba.conf` with the private rules, reloads, and waits until the server asks for passwords.
    private func lockDown(tools: String, password: String) throws {
        do {
            let connection = try Connector.open(
                setupConfiguration,
                counters: DatabaseCounters())
            guard let verifier = PQencryptPasswordConn(connection.handle, password, "postgres", "scram-sha-256") else {
                throw failure(
                    "could not hash the new password", detail: String(cString: PQerrorMessage(connection.handle)))
            }
            let text = String(cString: verifier)
            PQfreemem(verifier)
            try connection.query(
                SQLQuery(unsafeSQL: "ALTER ROLE postgres PASSWORD '\(text.replacingOccurrences(of: "'", with: "''"))'"))
        }
        try Self.writePrivateFile(hbaFile, ClusterAccess.hostBasedAuthentication, serverOwned: true)
        _ = try runServerTool("\(tools)/pg_ctl", ["reload", "-D", dataDirectory])
        try waitUntilPasswordsAreRequired()
        logger.notice(
            "made the local PostgreSQL cluster private: no more trust rules; connections need the stored password",
            metadata: ["directory": "\(directory.path)", "password_file": "\(passwordFile)"])
    }

    /// `pg_ctl reload` only signals the server; a connection with a wrong password tells when the new rules apply.
    private func waitUntilPasswordsAreRequired() throws {
        let probe = DatabaseConfiguration(
            conninfo: "host=\(socketDirectory) port=\(Self.port) user=postgres dbname=postgres password=wrong",
            applicationName: "agent-service-setup")
        for _ in 0..<200 {
            do {
                _ = try Connector.open(probe, counters: DatabaseCounters())
            } catch let error as StoreError where error.code == .connectionFailed && !error.isTransient {
                return
            } catch {}
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw failure("the server still trusts local users after a reload; see \(logFile)")
    }

    /// Generates a password and stores it in `passwordFile`.
    private func writeNewPassword() throws -> String {
        let password = ClusterAccess.newPassword()
        try Self.writePrivateFile(passwordFile, password + "\n", serverOwned: false)
        return password
    }

    /// Writes `contents` to `path` with mode `0600` through a new file renamed into place, owned by us or (when
    /// `serverOwned` and root) by the `postgres` OS user.
    static func writePrivateFile(_ path: String, _ contents: String, serverOwned: Bool) throws {
        let temporary = path + ".new"
        unlink(temporary)
        let descriptor = open(temporary, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StoreError(
                .embeddedPostgres, "local PostgreSQL: cannot write \(path) (\(String(cString: strerror(errno))))")
        }
        let bytes = Array(contents.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == bytes.count, synced else {
            unlink(temporary)
            throw StoreError(.embeddedPostgres, "local PostgreSQL: cannot write \(path)")
        }
        if serverOwned && isRoot { try chownToPostgres(temporary) }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw StoreError(.embeddedPostgres, "local PostgreSQL: cannot replace \(path)")
        }
    }

    /// For setup connections: CREATE DATABASE copies a template and may take long on a busy machine (many test
    /// suites start at once), so it gets a generous deadline instead of the default.
    private var setupConfiguration: DatabaseConfiguration {
        DatabaseConfiguration(
            conninfo: conninfo(database: "postgres"), applicationName: "agent-service-setup",
            statementTimeout: .seconds(120))
    }

    private func createDatabaseIfMissing() throws {
        let counters = DatabaseCounters()
        let connection = try Connector.open(
            setupConfiguration,
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
