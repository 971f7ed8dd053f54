import Foundation
import Logging
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

@Suite("Database outages lose no reply", .timeLimit(.minutes(3)))
struct DatabaseOutageTests {
    @Test("Postgres stops while a reply streams: the final write is retried and the turn is stored once it is back")
    func outageDuringStream() async throws {
        let directory = URL(fileURLWithPath: "/tmp/agent-outage-\(UUID().uuidString.prefix(8).lowercased())")
        let postgres = EmbeddedPostgres(
            directory: directory, databaseName: "outage", extraSettings: ["fsync = off"], logger: .quiet)
        let conninfo = try await postgres.startDetached()
        defer {
            try? postgres.stop(immediate: true)
            try? FileManager.default.removeItem(at: directory)
        }
        _ = try await Migrator(conninfo: conninfo, logger: .quiet).run()
        let database = Database(configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 2), logger: .quiet)

        try await ServiceHarness.run(database: (conninfo, database), configure: { $0.persistRetrySeconds = 30 }) {
            service in
            let user = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port,
                json: ServiceHarness.body("[[stub:slow 100ms x 15]] survive the outage", user: user, thread: "outage"))
            let turnID = try #require(stream.headers["x-turn-id"].flatMap(UUID.init(uuidString:)))
            var reader = stream.reader()
            var events = await reader.untilFirstChunk()
            // The database goes away mid-reply and stays away past the end of Claude's stream.
            try await onThread { try postgres.stop() }
            let health = try await TestHTTP.request(port: service.port, method: "GET", path: "/health")
            #expect(health.status == 503)
            try await Task.sleep(for: .seconds(3))
            _ = try await postgres.startDetached()

            events += await reader.rest()
            #expect(events.last?.isDone == true, "done arrives once the turn is stored")
            let turn = try #require(try await service.repository.turn(userID: user, id: turnID))
            #expect(turn.status == .completed)
            #expect(turn.reply == events.compactMap(\.chunk).joined())
            #expect(turn.usage.outputTokens == 15)
        }
    }
}
