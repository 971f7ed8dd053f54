import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

@Suite("Hardening: idempotency, crashes, deletes and leases", .timeLimit(.minutes(3)))
struct TurnEdgeCaseTests {
    @Test("an Idempotency-Key is bound to its request: another question or thread is 422, the same one replays")
    func idempotencyKeyBoundToRequest() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let key = ["Idempotency-Key": "key-\(UUID().uuidString)"]
            let first = try await service.streamTurn("the question", user: user, thread: "t", headers: key)
            #expect(first.events.last?.isDone == true)
            for (question, thread) in [("another question", "t"), ("the question", "elsewhere")] {
                let reused = try await TestHTTP.postJSON(
                    port: service.port, path: "/query_stream",
                    json: ServiceHarness.body(question, user: user, thread: thread), headers: key)
                #expect(reused.status == 422, "\(question) / \(thread)")
                #expect((reused.json["error"] as? [String: Any])?["type"] as? String == "idempotency_key_reused")
            }
            // The same request, with or without its thread id, replays the stored turn.
            for thread in ["t", nil] as [String?] {
                let replay = try await TestHTTP.openEventStream(
                    port: service.port, json: ServiceHarness.body("the question", user: user, thread: thread),
                    headers: key)
                let events = await replay.all()
                #expect(events.last?.json["replayed"] as? Bool == true)
            }
            let turns = try await service.repository.turns(userID: user, threadID: "t", limit: 10, beforeSeq: nil)
            #expect(turns?.count == 1)
            #expect(service.stub.receivedRequests.count == 1)
        }
    }

    @Test("a turn left streaming by a dead process is swept to interrupted on its own, and its key replays it")
    func crashedTurnsAreSwept() async throws {
        try await ServiceHarness.run(configure: { $0.leaseSeconds = 2 }) { service in
            let user = UUID()
            // What a process killed mid-reply leaves behind: a streaming turn whose lease nobody renews.
            let keyed = try await service.repository.beginTurn(
                BeginTurnRequest(
                    userID: user, threadID: "crashed", question: "lost in a crash", idempotencyKey: "crash-key",
                    lease: .seconds(1)))
            guard case .started(let keyedTurn) = keyed else { throw HarnessError("not started") }
            let quiet = try await service.repository.beginTurn(
                BeginTurnRequest(userID: user, threadID: "quiet", question: "nobody asks again", lease: .seconds(1)))
            guard case .started(let quietTurn) = quiet else { throw HarnessError("not started") }

            try await Task.sleep(for: .milliseconds(1_200))
            // The retry right after the lease expired is answered with the interrupted turn, not 409 forever.
            let retry = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("lost in a crash", user: user, thread: "crashed"),
                headers: ["Idempotency-Key": "crash-key"])
            #expect(retry.status == 200)
            let events = await retry.all()
            #expect(events.last?.error?["type"] as? String == "interrupted")
            #expect(events.last?.error?["retryable"] as? Bool == true)
            #expect(try await service.repository.turn(userID: user, id: keyedTurn.turnID)?.status == .interrupted)

            // The other one, which no request touches, is swept by the service itself.
            #expect(
                try await service.eventually(timeout: .seconds(5)) {
                    try await service.repository.turn(userID: user, id: quietTurn.turnID)?.status == .interrupted
                })
            let messages = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/quiet/messages?user_id=\(user)")
            let reply = (messages.json["messages"] as? [[String: Any]])?.last
            #expect(reply?["status"] as? String == "interrupted")
        }
    }

    @Test("DELETE while a reply streams is 409 turn_in_progress; the reply is stored, and the delete works after")
    func deleteWhileStreaming() async throws {
        try await ServiceHarness.run(stub: AdmissionTests.slow) { service in
            let user = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("long", user: user, thread: "t"))
            let refused = try await TestHTTP.request(
                port: service.port, method: "DELETE", path: "/threads/t?user_id=\(user)")
            #expect(refused.status == 409)
            #expect((refused.json["error"] as? [String: Any])?["type"] as? String == "turn_in_progress")
            let events = await stream.all()
            #expect(events.last?.isDone == true)
            let turns = try await service.repository.turns(userID: user, threadID: "t", limit: 10, beforeSeq: nil)
            #expect(turns?.first?.status == .completed)
            let deleted = try await TestHTTP.request(
                port: service.port, method: "DELETE", path: "/threads/t?user_id=\(user)")
            #expect(deleted.status == 200)
        }
    }

    @Test("a turn that loses its lease is stopped and says so, instead of streaming on for a thread it no longer holds")
    func lostLeaseStopsTheTurn() async throws {
        try await ServiceHarness.run(configure: {
            $0.leaseSeconds = 3
            $0.claudeIdleTimeoutSeconds = 10
        }) { service in
            let user = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("[[stub:slow 200ms x 40]] long", user: user, thread: "t"))
            let turnID = try #require(stream.headers["x-turn-id"].flatMap(UUID.init(uuidString:)))
            var reader = stream.reader()
            _ = await reader.untilFirstChunk()
            // Another instance recovered the turn (as if this one had been unreachable past its lease).
            _ = try await service.runtime.database.withConnection {
                try $0.query("UPDATE turns SET status = 'interrupted', lease_until = NULL WHERE id = \(turnID)::uuid")
            }
            let rest = await reader.rest()
            #expect(rest.last?.error?["type"] as? String == "lease_lost")
            #expect(rest.compactMap(\.chunk).count < 39, "the reply was stopped early")
        }
    }
}
