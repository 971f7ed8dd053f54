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
        let cluster = try await PrivateCluster.start("outage")
        defer { cluster.remove() }
        let postgres = cluster.postgres
        let conninfo = cluster.conninfo
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

@Suite("A stalled database fails fast", .timeLimit(.minutes(3)))
struct StalledDatabaseTests {
    @Test("with every Postgres process stopped, requests get 503 database_unavailable in bounded time; health checks do not pile up; all recover")
    func stalledDatabaseAnswers503() async throws {
        let cluster = try await PrivateCluster.start("frozen")
        defer { cluster.remove() }
        let database = Database(
            configuration: DatabaseConfiguration(
                conninfo: cluster.conninfo, poolSize: 2, statementTimeout: .seconds(2), acquireTimeout: .seconds(1)),
            logger: .quiet)
        try await ServiceHarness.run(database: (cluster.conninfo, database)) { service in
            let user = UUID()
            _ = try await service.streamTurn("before the stall", user: user, thread: "t")
            cluster.freeze()
            let port = service.port
            let started = ContinuousClock.now
            let threads = try await TestHTTP.request(port: port, method: "GET", path: "/threads?user_id=\(user)")
            let threadsAfter = ContinuousClock.now - started
            #expect(threads.status == 503)
            #expect((threads.json["error"] as? [String: Any])?["type"] as? String == "database_unavailable")
            #expect(threadsAfter < .seconds(8), "answered after \(threadsAfter)")
            let query = try await TestHTTP.postJSON(
                port: port, path: "/query", json: ServiceHarness.body("during the stall", user: user, thread: "u"))
            #expect(query.status == 503)
            // A burst of health checks: each answers 503 within its 2 s budget, none waits for the others.
            let burstStart = ContinuousClock.now
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<20 {
                    group.addTask { try await TestHTTP.request(port: port, method: "GET", path: "/health").status }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 503 })
            // Checks that waited for one another would take 20 × 2 s; the margin is for a loaded machine.
            #expect(ContinuousClock.now - burstStart < .seconds(15))

            cluster.thaw()
            #expect(
                try await service.eventually(timeout: .seconds(20)) {
                    try await TestHTTP.request(port: port, method: "GET", path: "/health").status == 200
                })
            let after = try await TestHTTP.request(port: port, method: "GET", path: "/threads?user_id=\(user)")
            #expect(after.status == 200)
            let next = try await service.streamTurn("after the stall", user: user, thread: "t")
            #expect(next.events.last?.isDone == true)
            // Nothing the stalled requests started was half-written.
            let turns = try await service.repository.turns(userID: user, threadID: "u", limit: 10, beforeSeq: nil)
            #expect(turns == nil)
        }
    }
}
