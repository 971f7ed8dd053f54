import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

@Suite("Streaming chat over real sockets, real Postgres and the Claude stub", .timeLimit(.minutes(3)))
struct StreamingChatTests {
    @Test("chunks reach the client while the stub is still sending later deltas")
    func chunksArriveAsTheyAreSent() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let (stream, events) = try await service.streamTurn(
                "[[stub:slow 300ms x 8]] pace me", user: user)
            #expect(stream.status == 200)
            #expect(stream.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            #expect(stream.headers["cache-control"]?.contains("no-cache") == true)
            #expect(stream.headers["x-accel-buffering"] == "no")
            let chunks = events.filter { $0.chunk != nil }
            // Eight deltas, eight frames; a machine stalled for a whole pacing interval may deliver two as one (a
            // listener that falls behind gets what it missed in one frame), a buffering service would send one or two.
            #expect((6...8).contains(chunks.count))
            #expect((events.last?.json["usage"] as? [String: Any])?["output_tokens"] as? Int == 8)
            let arrivals = chunks.map(\.arrival)
            // Paced 300 ms apart at the stub: the client sees them spread over ~2.1 s, not bunched at the end.
            let spread = arrivals.last! - arrivals.first!
            #expect(spread > .milliseconds(1_500), "chunks arrived bunched together (spread \(spread))")
            // And they arrive one by one: most gaps between consecutive chunks are near the stub's 300 ms. A machine
            // that stalls now and then (CI at suite start: up to ~0.5 s) makes a delayed chunk arrive together with
            // its successor, shortening one or two gaps; a service that buffered would shorten nearly all of them.
            let gaps = zip(arrivals.dropFirst(), arrivals).map { $0 - $1 }
            let paced = gaps.filter { $0 > .milliseconds(150) }.count
            // A buffering service shortens every gap; a stalled machine only some.
            #expect(paced >= chunks.count - 4, "chunks arrived in bunches (gaps \(gaps))")
            #expect(events.last?.isDone == true)
        }
    }

    @Test("the second turn carries the first turn's question and reply, and done comes after persistence")
    func memoryAcrossTurns() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let first = try await service.streamTurn("My name is Ada. Remember it.", user: user, thread: "memory-1")
            let firstDone = try #require(first.events.last?.json)
            #expect(firstDone["done"] as? Bool == true)
            #expect(firstDone["thread_id"] as? String == "memory-1")
            let firstTurnID = try #require((firstDone["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
            // `done` means persisted: the turn is readable the moment the event arrives.
            let stored = try await service.repository.turn(userID: user, id: firstTurnID)
            #expect(stored?.status == .completed)
            let firstReply = first.events.compactMap(\.chunk).joined()
            #expect(stored?.reply == firstReply)
            #expect(firstReply.contains("My name is Ada"))

            let second = try await service.streamTurn("What is my name?", user: user, thread: "memory-1")
            #expect(second.events.last?.isDone == true)
            let request = try #require(service.stub.receivedRequests.last)
            #expect(request.messages.count == 3)
            #expect(request.messages.first?.role == "user")
            #expect(request.messages.first?.text.contains("My name is Ada. Remember it.") == true)
            #expect(request.messages.dropFirst().first?.role == "assistant")
            #expect(request.messages.dropFirst().first?.text == firstReply)
            #expect(request.messages.last?.text.contains("What is my name?") == true)

            let turns = try #require(
                try await service.repository.turns(userID: user, threadID: "memory-1", limit: 10, beforeSeq: nil))
            #expect(turns.map(\.question) == ["My name is Ada. Remember it.", "What is my name?"])
            #expect(turns.map(\.seq) == [1, 2])
            #expect(turns.allSatisfy { $0.status == .completed })
        }
    }

    @Test("an omitted thread_id starts a new thread whose id is reported in done")
    func newThreadID() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let (stream, events) = try await service.streamTurn("hello", user: user)
            let done = try #require(events.last?.json)
            let threadID = try #require(done["thread_id"] as? String)
            #expect(stream.headers["x-thread-id"] == threadID)
            let threads = try await service.repository.listThreads(userID: user, limit: 10, before: nil)
            #expect(threads.map(\.id) == [threadID])
            let usage = try #require(done["usage"] as? [String: Any])
            #expect((usage["output_tokens"] as? Int ?? 0) > 0)
        }
    }

    @Test("a client that disconnects after the first chunk still gets its full reply persisted as completed")
    func disconnectDoesNotCancel() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port,
                json: ServiceHarness.body("[[stub:slow 100ms x 10]] keep going without me", user: user, thread: "gone"))
            let turnID = try #require(stream.headers["x-turn-id"].flatMap(UUID.init(uuidString:)))
            var reader = stream.reader()
            _ = await reader.untilFirstChunk()
            stream.close()
            let completed = try await service.eventually(timeout: .seconds(10)) {
                try await service.repository.turn(userID: user, id: turnID)?.status == .completed
            }
            #expect(completed)
            let turn = try #require(try await service.repository.turn(userID: user, id: turnID))
            // All ten deltas were read and stored, not just the one the client saw.
            #expect(turn.usage.outputTokens == 10)
            #expect(turn.reply?.contains("keep going without me") == true)
        }
    }

    @Test("the non-streaming fallback returns the whole reply as JSON, on /query and /chat")
    func nonStreaming() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            for path in ["/query", "/chat"] {
                let response = try await TestHTTP.postJSON(
                    port: service.port, path: path, json: ServiceHarness.body("plain please", user: user, thread: "t"))
                #expect(response.status == 200)
                let json = response.json
                #expect((json["response"] as? String)?.contains("plain please") == true)
                #expect(json["thread_id"] as? String == "t")
                #expect(json["turn_id"] is String)
                #expect(json["usage"] is [String: Any])
            }
            let turns = try await service.repository.turns(userID: user, threadID: "t", limit: 10, beforeSeq: nil)
            #expect(turns?.count == 2)
        }
    }

    @Test("a repeated Idempotency-Key replays the same turn and never creates a second")
    func idempotencyKey() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let key = "retry-\(UUID())"
            let first = try await service.streamTurn(
                "only once", user: user, thread: "idem", headers: ["Idempotency-Key": key])
            let second = try await service.streamTurn(
                "only once", user: user, thread: "idem", headers: ["Idempotency-Key": key])
            let firstDone = try #require(first.events.last?.json)
            let secondDone = try #require(second.events.last?.json)
            #expect(firstDone["turn_id"] as? String == secondDone["turn_id"] as? String)
            #expect(secondDone["replayed"] as? Bool == true)
            #expect(first.events.compactMap(\.chunk).joined() == second.events.compactMap(\.chunk).joined())
            let turns = try await service.repository.turns(userID: user, threadID: "idem", limit: 10, beforeSeq: nil)
            #expect(turns?.count == 1)
            #expect(service.stub.receivedRequests.count == 1)
        }
    }

    @Test("an idle stream gets `: ping` comments so proxies keep it open")
    func keepAlivePings() async throws {
        try await ServiceHarness.run(configure: {
            $0.pingIntervalSeconds = 1
            $0.claudeIdleTimeoutSeconds = 10
        }) { service in
            let (_, events) = try await service.streamTurn("[[stub:slow 2500ms x 2]] take your time", user: UUID())
            #expect(events.contains { $0.comment == "ping" }, "no keep-alive during 2.5 s of silence")
            #expect(events.last?.isDone == true)
            #expect(events.filter { $0.chunk != nil }.count == 2)
        }
    }
}
