import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

@Suite("Threads API, isolation between users, health and metrics", .timeLimit(.minutes(3)))
struct ThreadsAPITests {
    @Test("listing, reading and deleting threads; user A gets 404 for user B's thread on every endpoint")
    func threadsAndIsolation() async throws {
        try await ServiceHarness.run { service in
            let alice = UUID()
            let bob = UUID()
            _ = try await service.streamTurn("first question", user: bob, thread: "shared-name")
            _ = try await service.streamTurn("second question", user: bob, thread: "shared-name")
            _ = try await service.streamTurn("other thread", user: bob, thread: "other")

            let list = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads?user_id=\(bob.uuidString)&limit=10")
            #expect(list.status == 200)
            let threads = try #require(list.json["threads"] as? [[String: Any]])
            #expect(threads.map { $0["thread_id"] as? String } == ["other", "shared-name"])
            #expect(threads.last?["turn_count"] as? Int == 2)

            let messages = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/shared-name/messages?user_id=\(bob.uuidString)")
            #expect(messages.status == 200)
            let items = try #require(messages.json["messages"] as? [[String: Any]])
            #expect(items.map { $0["role"] as? String } == ["user", "assistant", "user", "assistant"])
            #expect(items.first?["content"] as? String == "first question")

            // Alice: Bob's thread does not exist for her, on every endpoint.
            let aliceList = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads?user_id=\(alice.uuidString)")
            #expect((aliceList.json["threads"] as? [Any])?.isEmpty == true)
            let aliceRead = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/shared-name/messages?user_id=\(alice.uuidString)")
            #expect(aliceRead.status == 404)
            let aliceDelete = try await TestHTTP.request(
                port: service.port, method: "DELETE", path: "/threads/shared-name?user_id=\(alice.uuidString)")
            #expect(aliceDelete.status == 404)
            // Alice using the same thread id gets her own thread, with no memory of Bob's.
            _ = try await service.streamTurn("alice here", user: alice, thread: "shared-name")
            let request = try #require(service.stub.receivedRequests.last)
            #expect(request.messages.count == 1)

            let bobDelete = try await TestHTTP.request(
                port: service.port, method: "DELETE", path: "/threads/shared-name?user_id=\(bob.uuidString)")
            #expect(bobDelete.status == 200)
            let gone = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/shared-name/messages?user_id=\(bob.uuidString)")
            #expect(gone.status == 404)
            let alicesStill = try await service.repository.turns(
                userID: alice, threadID: "shared-name", limit: 10, beforeSeq: nil)
            #expect(alicesStill?.count == 1)
        }
    }

    @Test("pagination of messages walks back with next_before")
    func pagination() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            for index in 1...5 { _ = try await service.streamTurn("q\(index)", user: user, thread: "pages") }
            let page = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/pages/messages?user_id=\(user.uuidString)&limit=2")
            let items = try #require(page.json["messages"] as? [[String: Any]])
            #expect(
                items.compactMap { $0["role"] as? String == "user" ? $0["content"] as? String : nil } == ["q4", "q5"])
            let before = try #require(page.json["next_before"] as? Int)
            let older = try await TestHTTP.request(
                port: service.port, method: "GET",
                path: "/threads/pages/messages?user_id=\(user.uuidString)&limit=2&before=\(before)")
            let olderItems = try #require(older.json["messages"] as? [[String: Any]])
            #expect(
                olderItems.compactMap { $0["role"] as? String == "user" ? $0["content"] as? String : nil } == [
                    "q2", "q3",
                ])
        }
    }

    @Test("health reports the database and the model; metrics are Prometheus text")
    func healthAndMetrics() async throws {
        try await ServiceHarness.run { service in
            let health = try await TestHTTP.request(port: service.port, method: "GET", path: "/health")
            #expect(health.status == 200)
            #expect(health.json["status"] as? String == "ok")
            #expect(health.json["database"] as? String == "ok")
            #expect(health.json["model"] is String)
            _ = try await service.streamTurn("count me", user: UUID())
            let metrics = try await TestHTTP.request(port: service.port, method: "GET", path: "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.text.contains(#"agent_turns_total{outcome="completed"} 1"#))
            #expect(metrics.text.contains("agent_time_to_first_chunk_seconds_bucket"))
            #expect(metrics.text.contains("agent_active_streams"))
        }
    }
}
