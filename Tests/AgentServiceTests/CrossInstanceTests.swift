import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

/// Two real `serve` processes on one database: resume and stop reach the instance that owns the turn through
/// Postgres alone.
@Suite("Resume and stop across instances", .serialized, .timeLimit(.minutes(3)))
struct CrossInstanceTests {
    static let question = "Grüße aus Köln 🌍 — naïve café, 日本語のテキスト"

    static func resume(port: Int, thread: String, user: UUID, lastEventID: String?) async throws -> EventStream {
        try await TestHTTP.openEventStream(
            port: port, method: "GET", path: "/threads/\(thread)/stream?user_id=\(user.uuidString.lowercased())",
            headers: lastEventID.map { ["Last-Event-ID": $0] } ?? [:])
    }

    /// The `agent_relay_notifications_total` counters of one instance, by kind.
    static func notifications(port: Int) async throws -> [String: Int] {
        let metrics = try await TestHTTP.request(port: port, method: "GET", path: "/metrics")
        var counts: [String: Int] = [:]
        for line in metrics.text.split(separator: "\n") where line.hasPrefix("agent_relay_notifications_total{") {
            guard let kind = line.split(separator: "\"").dropFirst().first,
                let value = line.split(separator: " ").last.flatMap({ Double($0) })
            else { continue }
            counts[String(kind)] = Int(value)
        }
        return counts
    }

    static func stop(_ services: ServiceProcess...) async {
        for service in services where service.process.isRunning {
            kill(service.process.processIdentifier, SIGTERM)
            _ = await service.waitForExit(timeout: .seconds(15))
        }
    }

    @Test("a stream started on A and resumed on B mid-reply ends identically on both; a turn nobody resumes sends no NOTIFY")
    func resumeOnAnotherInstance() async throws {
        let fixture = try await BinaryFixture.make()
        let a = try await fixture.serve(graceSeconds: 5)
        let b = try await fixture.serve(graceSeconds: 5)
        let user = UUID()

        // Nobody resumes this one: its owner sends nothing to anyone.
        let quiet = try await TestHTTP.openEventStream(
            port: a.port, json: ServiceHarness.body("[[stub:slow 20ms x 20]] quiet", user: user, thread: "quiet"))
        #expect(await quiet.all().last?.isDone == true)
        #expect(try await Self.notifications(port: a.port).values.reduce(0, +) == 0)
        #expect(try await Self.notifications(port: b.port).values.reduce(0, +) == 0)

        let original = try await TestHTTP.openEventStream(
            port: a.port,
            json: ServiceHarness.body("[[stub:slow 100ms x 30]] \(Self.question)", user: user, thread: "moving"))
        var reader = original.reader()
        var before: [ReceivedEvent] = []
        while before.compactMap(\.chunk).count < 4 { before += await reader.untilFirstChunk() }
        let lastID = try #require(before.last { $0.id != nil }?.id)

        let resumed = try await Self.resume(port: b.port, thread: "moving", user: user, lastEventID: lastID)
        #expect(resumed.status == 200)
        async let onB = resumed.all()
        let onA = before + (await reader.rest())
        let fromB = await onB

        let endA = try #require(onA.last)
        let endB = try #require(fromB.last)
        #expect(endA.isDone)
        #expect(endB.data == endA.data)
        let whole = onA.compactMap(\.chunk).joined()
        #expect(before.compactMap(\.chunk).joined() + fromB.compactMap(\.chunk).joined() == whole)
        #expect(fromB.compactMap(\.chunk).count > 0)
        let turnID = try #require((endA.json["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
        let row = try #require(try await fixture.repository.turn(userID: user, id: turnID))
        #expect(row.reply == whole)
        // The relay went through Postgres: B asked, A sent text and the end.
        let sentByA = try await Self.notifications(port: a.port)
        #expect((sentByA["text"] ?? 0) > 0)
        #expect(sentByA["end"] == 1)
        #expect((try await Self.notifications(port: b.port)["request"] ?? 0) >= 1)

        await Self.stop(a, b)
        await fixture.stub.stop()
        await fixture.database.close()
    }

    @Test("a cancel sent to B stops A's turn: done with stop_reason cancelled on A, the row cancelled with the text A sent")
    func cancelOnAnotherInstance() async throws {
        let fixture = try await BinaryFixture.make()
        let a = try await fixture.serve(graceSeconds: 5)
        let b = try await fixture.serve(graceSeconds: 5)
        let user = UUID()
        let stream = try await TestHTTP.openEventStream(
            port: a.port, json: ServiceHarness.body("[[stub:slow 100ms x 50]] stop me", user: user, thread: "far"))
        var reader = stream.reader()
        var events: [ReceivedEvent] = []
        while events.compactMap(\.chunk).count < 3 { events += await reader.untilFirstChunk() }

        let answer = try await TestHTTP.request(
            port: b.port, method: "POST", path: "/threads/far/cancel?user_id=\(user.uuidString.lowercased())")
        #expect(answer.status == 200)
        #expect(answer.json["cancelled"] as? Bool == true)
        events += await reader.rest()
        let end = try #require(events.last)
        #expect(end.isDone)
        #expect(end.json["stop_reason"] as? String == "cancelled")
        #expect(events.compactMap(\.chunk).count < 50)
        let turnID = try #require((answer.json["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
        let row = try #require(try await fixture.repository.turn(userID: user, id: turnID))
        #expect(row.status == .cancelled)
        #expect(row.reply == events.compactMap(\.chunk).joined())
        #expect(try await Self.notifications(port: a.port)["ack"] == 1)

        await Self.stop(a, b)
        await fixture.stub.stop()
        await fixture.database.close()
    }

    @Test("SIGKILL of A mid-reply: a resumer on B gets the text A sent, then interrupted once the lease expires")
    func ownerKilled() async throws {
        let fixture = try await BinaryFixture.make()
        let short = ["TURN_LEASE_SECONDS": "10", "SSE_PING_SECONDS": "2"]
        let a = try await fixture.serve(graceSeconds: 5, extra: short)
        let b = try await fixture.serve(graceSeconds: 5, extra: short)
        let user = UUID()
        let stream = try await TestHTTP.openEventStream(
            port: a.port, json: ServiceHarness.body("[[stub:slow 200ms x 200]] long", user: user, thread: "doomed"))
        var reader = stream.reader()
        var before: [ReceivedEvent] = []
        while before.compactMap(\.chunk).count < 2 { before += await reader.untilFirstChunk() }
        let lastID = try #require(before.last { $0.id != nil }?.id)
        let turnID = try #require(lastID.split(separator: ":").first.flatMap { UUID(uuidString: String($0)) })

        let resumed = try await Self.resume(port: b.port, thread: "doomed", user: user, lastEventID: lastID)
        var follower = resumed.reader()
        // B relays A's live text before A dies.
        var fromB = await follower.untilFirstChunk()
        #expect(fromB.last?.chunk != nil)
        kill(a.process.processIdentifier, SIGKILL)
        _ = await a.waitForExit(timeout: .seconds(5))
        fromB += await follower.rest()

        let end = try #require(fromB.last)
        #expect((end.error?["type"] as? String) == "interrupted")
        let row = try #require(try await fixture.repository.turn(userID: user, id: turnID))
        #expect(row.status == .interrupted)
        // What the resumer was sent is a prefix of what A streamed, and the checkpoint is not longer than that.
        let seen = before.compactMap(\.chunk).joined() + fromB.compactMap(\.chunk).joined()
        #expect(seen.hasPrefix(row.reply ?? ""))
        #expect(!seen.isEmpty)

        await Self.stop(b)
        await fixture.stub.stop()
        await fixture.database.close()
    }
}
