import Foundation
import TestSupport
import Testing

@testable import ThreadStore

@Suite(.timeLimit(.minutes(2))) struct EmbeddedPostgresTests {
    @Test("concurrent first starts share one cluster; a later start reuses it and the data survives a restart")
    func firstStartReuseAndRestart() async throws {
        let directory = URL(fileURLWithPath: "/tmp/agent-service-embedded-\(UUID().uuidString.prefix(8))/postgres")
        let cluster = EmbeddedPostgres(
            directory: directory, extraSettings: ["fsync = off"], logger: TestPostgres.logger)
        defer {
            cleanUpOffPool {
                try? cluster.stop(immediate: true)
                try? FileManager.default.removeItem(at: directory.deletingLastPathComponent())
            }
        }
        async let first = cluster.startDetached()
        async let second = cluster.startDetached()
        let (a, b) = try await (first, second)
        #expect(a == b)

        let database = Database(
            configuration: DatabaseConfiguration(conninfo: a, poolSize: 1), logger: TestPostgres.logger)
        _ = try await database.withConnection { try $0.query("CREATE TABLE kept (note text)") }
        _ = try await database.withConnection { try $0.query("INSERT INTO kept VALUES (\("still here"))") }
        #expect(try await cluster.startDetached() == a)

        try await cluster.stopDetached()
        _ = try await cluster.startDetached()
        let note = try await database.withConnection { try $0.query("SELECT note FROM kept").string(0, 0) }
        #expect(note == "still here")
        await database.close()
    }

    @Test("a socket path too long for a Unix socket falls back to a short folder under /tmp")
    func longSocketPath() {
        let deep = URL(fileURLWithPath: "/tmp/" + String(repeating: "nested-folder/", count: 8) + "postgres")
        let cluster = EmbeddedPostgres(directory: deep, logger: TestPostgres.logger)
        #expect(cluster.socketDirectory.hasPrefix("/tmp/agent-service-"))
        #expect((cluster.socketDirectory + "/.s.PGSQL.5432").utf8.count < 108)
        #expect(
            cluster.socketDirectory == EmbeddedPostgres(directory: deep, logger: TestPostgres.logger).socketDirectory)
        let short = EmbeddedPostgres(
            directory: URL(fileURLWithPath: "/srv/app/.agent-service/postgres"), logger: TestPostgres.logger)
        #expect(short.socketDirectory == "/srv/app/.agent-service/postgres/socket")
    }

    // MARK: - Privacy

    private static func mode(_ path: String) -> (permissions: mode_t, owner: uid_t)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (info.st_mode & 0o777, info.st_uid)
    }

    /// The conninfo of `database` without any password.
    private static func withoutPassword(_ cluster: EmbeddedPostgres, database: String = "postgres") -> String {
        "host=\(cluster.socketDirectory) port=5432 user=postgres dbname=\(database)"
    }

    private static func connectionError(_ conninfo: String) async -> StoreError? {
        let database = Database(
            configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger)
        var failure: StoreError?
        do { try await database.ping() } catch { failure = error as? StoreError }
        await database.close()
        return failure
    }

    @Test("a new cluster is private: no trust rule or TCP listener, 0700 folders, 0600 password, none without it")
    func newClusterIsPrivate() async throws {
        let cluster = try await TestPostgres.embedded()
        let rules = try String(contentsOfFile: cluster.hbaFile, encoding: .utf8)
        #expect(!ClusterAccess.allowsTrust(rules))
        #expect(rules == ClusterAccess.hostBasedAuthentication)

        let database = Database(
            configuration: DatabaseConfiguration(conninfo: cluster.conninfo(database: "postgres"), poolSize: 1),
            logger: TestPostgres.logger)
        let settings = try await database.withConnection {
            try $0.query("SELECT current_setting('listen_addresses'), current_setting('unix_socket_permissions')")
        }
        await database.close()
        #expect(settings.string(0, 0) == "", "no TCP listener")
        #expect(settings.string(0, 1) == "0700")

        for folder in [cluster.directory.path, cluster.dataDirectory, cluster.socketDirectory] {
            #expect(Self.mode(folder)?.permissions == 0o700, "\(folder)")
        }
        let passwordFile = try #require(Self.mode(cluster.passwordFile))
        #expect(passwordFile.permissions == 0o600)
        #expect(passwordFile.owner == geteuid())
        #expect(cluster.conninfo().contains("password=\(try #require(cluster.storedPassword()))"))

        let noPassword = try #require(await Self.connectionError(Self.withoutPassword(cluster)))
        #expect(noPassword.code == .connectionFailed)
        #expect(!noPassword.isTransient)
        #expect(noPassword.message.contains("asks user 'postgres' for a password"))
        let wrongPassword = try #require(
            await Self.connectionError(Self.withoutPassword(cluster) + " password=\(ClusterAccess.newPassword())"))
        #expect(wrongPassword.message.contains("authentication failed for user 'postgres'"))
    }

    /// Sets a cluster up the way versions before the lockdown did (trust for every local user, a 0755 socket folder),
    /// with a table `kept` holding one row; leaves it running or stopped.
    private static func makeTrustCluster(_ cluster: EmbeddedPostgres, running: Bool) async throws {
        let tools = try EmbeddedPostgres.serverBinDirectory()
        // initdb and pg_ctl block for seconds: off the cooperative pool.
        try await onThread { try Self.initTrustCluster(cluster, tools: tools) }
        let database = Database(
            configuration: DatabaseConfiguration(conninfo: withoutPassword(cluster), poolSize: 1),
            logger: TestPostgres.logger)
        _ = try await database.withConnection { connection in
            try connection.query("CREATE TABLE kept (note text)")
            return try connection.query("INSERT INTO kept VALUES ('from the trusting days')")
        }
        await database.close()
        if !running {
            _ = try await onThread {
                try cluster.runServerTool("\(tools)/pg_ctl", ["stop", "-D", cluster.dataDirectory, "-w"])
            }
        }
    }

    /// initdb with trust for everyone, then a start. Blocking.
    private static func initTrustCluster(_ cluster: EmbeddedPostgres, tools: String) throws {
        let fileManager = FileManager.default
        try fileManager.createDirectory(atPath: cluster.socketDirectory, withIntermediateDirectories: true)
        if EmbeddedPostgres.isRoot {
            try EmbeddedPostgres.chownToPostgres(cluster.directory.path)
            try EmbeddedPostgres.chownToPostgres(cluster.socketDirectory)
        }
        try cluster.runServerTool(
            "\(tools)/initdb",
            ["-D", cluster.dataDirectory, "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres"])
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: cluster.dataDirectory + "/postgresql.conf"))
        handle.seekToEndOfFile()
        let settings = [
            "listen_addresses = ''", "unix_socket_directories = '\(cluster.socketDirectory)'", "port = 5432",
            "fsync = off",
        ]
        handle.write(Data(("\n# agent-service\n" + settings.joined(separator: "\n") + "\n").utf8))
        try handle.close()
        try cluster.runServerTool(
            "\(tools)/pg_ctl", ["start", "-D", cluster.dataDirectory, "-l", cluster.logFile, "-w", "-t", "60"])
    }

    @Test(
        "a cluster made by an earlier version (trust for everyone) is made private on its next start",
        arguments: [true, false])
    func trustClusterUpgraded(running: Bool) async throws {
        let directory = URL(fileURLWithPath: "/tmp/agent-service-upgrade-\(UUID().uuidString.prefix(8))/postgres")
        let cluster = EmbeddedPostgres(directory: directory, databaseName: "postgres", logger: TestPostgres.logger)
        defer {
            cleanUpOffPool {
                try? cluster.stop(immediate: true)
                try? FileManager.default.removeItem(at: directory.deletingLastPathComponent())
            }
        }
        try await Self.makeTrustCluster(cluster, running: running)
        #expect(ClusterAccess.allowsTrust(try String(contentsOfFile: cluster.hbaFile, encoding: .utf8)))
        #expect(cluster.storedPassword() == nil)

        let conninfo = try await cluster.startDetached()
        let password = try #require(cluster.storedPassword())
        #expect(conninfo.hasSuffix(" password=\(password)"))
        let rules = try String(contentsOfFile: cluster.hbaFile, encoding: .utf8)
        #expect(!ClusterAccess.allowsTrust(rules))
        #expect(Self.mode(cluster.passwordFile)?.permissions == 0o600)
        #expect(Self.mode(cluster.socketDirectory)?.permissions == 0o700)
        #expect(Self.mode(cluster.directory.path)?.permissions == 0o700)
        let refused = try #require(await Self.connectionError(Self.withoutPassword(cluster)))
        #expect(!refused.isTransient)

        let database = Database(
            configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger)
        let kept = try await database.withConnection {
            try $0.query("SELECT note, current_setting('unix_socket_permissions') FROM kept")
        }
        await database.close()
        #expect(kept.string(0, 0) == "from the trusting days")
        // A server that was running keeps its socket mode until its next start; the folder is 0700 meanwhile.
        #expect(kept.string(0, 1) == (running ? "0777" : "0700"))

        #expect(try await cluster.startDetached() == conninfo, "the next start changes nothing")
    }

    @Test("a fallback folder in a shared place is refused if another user owns it, others may write it, or it's a link")
    func sharedFolderChecks() throws {
        let base = "/tmp/agent-service-folders-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }

        let fresh = base + "/fresh"
        try PrivateDirectory.prepare(fresh, shared: true, serverOwned: false)
        #expect(Self.mode(fresh)?.permissions == 0o700)
        try PrivateDirectory.prepare(fresh, shared: true, serverOwned: false)  // ours already: fine

        let open = base + "/open"
        mkdir(open, 0o700)
        chmod(open, 0o777)
        #expect(throws: StoreError.self) { try PrivateDirectory.prepare(open, shared: true, serverOwned: false) }

        let link = base + "/link"
        symlink(fresh, link)
        #expect(throws: StoreError.self) { try PrivateDirectory.prepare(link, shared: true, serverOwned: false) }

        if geteuid() == 0, let nobody = getpwnam("nobody").map({ ($0.pointee.pw_uid, $0.pointee.pw_gid) }) {
            let foreign = base + "/foreign"
            mkdir(foreign, 0o700)
            chown(foreign, nobody.0, nobody.1)
            #expect(throws: StoreError.self) { try PrivateDirectory.prepare(foreign, shared: true, serverOwned: false) }
            #expect(Self.mode(foreign)?.owner == nobody.0, "left as it was")
        }
    }
}
