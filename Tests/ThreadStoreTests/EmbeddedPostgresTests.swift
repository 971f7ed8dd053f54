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
            try? cluster.stop(immediate: true)
            try? FileManager.default.removeItem(at: directory.deletingLastPathComponent())
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

        try cluster.stop()
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
}
