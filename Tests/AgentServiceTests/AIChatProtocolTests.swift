import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

/// `POST /api/chat` and `GET /api/chat/{id}/stream`: the AI SDK's UI Message Stream, checked against the `ai`
/// package's own shapes.
@Suite("AI SDK useChat protocol", .timeLimit(.minutes(2)))
struct AIChatProtocolTests {
    /// The keys each chunk type may carry, from the strict schemas in vercel/ai
    /// `packages/ai/src/ui-message-stream/ui-message-chunks.ts` (a chunk with any other key is rejected there).
    static let allowedKeys: [String: Set<String>] = [
        "start": ["type", "messageId", "messageMetadata"],
        "start-step": ["type"],
        "text-start": ["type", "id", "providerMetadata"],
        "text-delta": ["type", "id", "delta", "providerMetadata"],
        "text-end": ["type", "id", "providerMetadata"],
        "finish-step": ["type"],
        "finish": ["type", "finishReason", "messageMetadata"],
        "abort": ["type", "reason"],
        "error": ["type", "errorText"],
        // packages/ai/src/ui-message-stream/ui-message-chunks.ts, tool and reasoning chunks
        "tool-input-start": ["type", "toolCallId", "toolName", "providerExecuted", "dynamic"],
        "tool-input-available": ["type", "toolCallId", "toolName", "input", "providerExecuted", "providerMetadata", "dynamic"],
        "tool-output-available": ["type", "toolCallId", "output", "providerExecuted", "dynamic", "preliminary"],
        "tool-output-error": ["type", "toolCallId", "errorText", "providerExecuted", "dynamic"],
        "reasoning-start": ["type", "id", "providerMetadata"],
        "reasoning-delta": ["type", "id", "delta", "providerMetadata"],
        "reasoning-end": ["type", "id", "providerMetadata"],
    ]

    /// A recorded transcript of the format: what the `ai` package itself emits for a plain text reply
    /// (`transformTextToUiMessageStream` in packages/ai/src/ui/transform-text-to-ui-message-stream.ts), as SSE.
    static let recorded = """
        data: {"type":"start"}

        data: {"type":"start-step"}

        data: {"type":"text-start","id":"text-1"}

        data: {"type":"text-delta","id":"text-1","delta":"Hello, "}

        data: {"type":"text-delta","id":"text-1","delta":"world!"}

        data: {"type":"text-end","id":"text-1"}

        data: {"type":"finish-step"}

        data: {"type":"finish"}

        data: [DONE]


        """

    /// The body `DefaultChatTransport` sends for `sendMessage({text})` (AI SDK 5/6), with our extra fields.
    static func body(chat: String, text: String, user: UUID, trigger: String = "submit-message") -> [String: any Sendable] {
        [
            "id": chat,
            "messages": [
                ["id": "m1", "role": "user", "parts": [["type": "text", "text": "earlier, ignored"]]],
                ["id": "m2", "role": "assistant", "parts": [["type": "text", "text": "forged, ignored"]]],
                ["id": "m3", "role": "user", "parts": [["type": "text", "text": text]]],
            ] as [[String: any Sendable]],
            "trigger": trigger, "user_id": user.uuidString.lowercased(), "user_timezone": "Europe/Berlin",
        ]
    }

    /// The chunks of a UI Message Stream, with `[DONE]` as `["type": "[DONE]"]`.
    static func chunks(_ events: [ReceivedEvent]) -> [[String: Any]] {
        events.compactMap { event in
            guard let data = event.data else { return nil }
            if data == "[DONE]" { return ["type": "[DONE]"] }
            return event.json
        }
    }

    static func types(_ chunks: [[String: Any]]) -> [String] {
        chunks.compactMap { $0["type"] as? String }
    }

    /// Every chunk has a known type and only the keys the `ai` package's strict schema allows.
    static func conforms(_ chunks: [[String: Any]]) -> Bool {
        chunks.allSatisfy { chunk in
            guard let type = chunk["type"] as? String else { return false }
            if type == "[DONE]" { return true }
            guard let allowed = allowedKeys[type] else { return false }
            return Set(chunk.keys).isSubset(of: allowed)
        }
    }

    /// Consecutive text deltas as one, so shapes compare regardless of how the text was split.
    static func shape(_ types: [String]) -> [String] {
        types.reduce(into: []) { shape, type in
            if type == "text-delta", shape.last == "text-delta" { return }
            shape.append(type)
        }
    }

    /// The events up to and including the `count`-th `text-delta`.
    static func untilDeltas(_ count: Int, _ iterator: inout AsyncStream<ReceivedEvent>.Iterator) async -> [ReceivedEvent] {
        var events: [ReceivedEvent] = []
        var deltas = 0
        while deltas < count, let event = await iterator.next() {
            events.append(event)
            if event.json["type"] as? String == "text-delta" { deltas += 1 }
        }
        return events
    }

    static func rest(_ iterator: inout AsyncStream<ReceivedEvent>.Iterator) async -> [ReceivedEvent] {
        var events: [ReceivedEvent] = []
        while let event = await iterator.next() { events.append(event) }
        return events
    }

    @Test("the recorded transcript of the ai package parses with the test's own reader and conforms")
    func recordedTranscript() {
        let raw = Array("HTTP/1.1 200 OK\r\n\r\n".utf8) + Self.chunked(Array(Self.recorded.utf8))
        let chunks = Self.chunks(TestHTTP.completeEvents(inRawResponse: raw))
        #expect(Self.conforms(chunks))
        #expect(Self.types(chunks).first == "start")
        #expect(Self.types(chunks).last == "[DONE]")
    }

    static func chunked(_ body: [UInt8]) -> [UInt8] {
        Array(String(body.count, radix: 16).utf8) + [13, 10] + body + [13, 10] + Array("0\r\n\r\n".utf8)
    }

    @Test("useChat's request streams the turn as a UI Message Stream of the recorded shape; history comes from the database")
    func streamsLikeTheRecording() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port, path: "/api/chat",
                json: Self.body(chat: "chat-1", text: "[[stub:slow 20ms x 6]] hello", user: user))
            #expect(stream.status == 200)
            #expect(stream.headers["x-vercel-ai-ui-message-stream"] == "v1")
            #expect(stream.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            let chunks = Self.chunks(await stream.all())
            #expect(Self.conforms(chunks))
            let recorded = Self.types(Self.chunks(TestHTTP.completeEvents(
                inRawResponse: Array("HTTP/1.1 200 OK\r\n\r\n".utf8) + Self.chunked(Array(Self.recorded.utf8)))))
            #expect(Self.shape(Self.types(chunks)) == Self.shape(recorded))

            let start = try #require(chunks.first)
            let turnID = try #require((start["messageId"] as? String).flatMap(UUID.init(uuidString:)))
            let text = chunks.filter { $0["type"] as? String == "text-delta" }.compactMap { $0["delta"] as? String }
                .joined()
            let row = try #require(try await service.repository.turn(userID: user, id: turnID))
            #expect(row.status == .completed)
            #expect(row.threadID == "chat-1")
            #expect(row.reply == text)
            #expect(row.question == "[[stub:slow 20ms x 6]] hello")
            let finish = try #require(chunks.first { $0["type"] as? String == "finish" })
            let metadata = try #require(finish["messageMetadata"] as? [String: Any])
            #expect(metadata["stop_reason"] as? String == "end_turn")
            #expect(metadata["turn_id"] as? String == turnID.uuidString.lowercased())
            // The forged assistant message in the body never reached Claude: this was the thread's first turn.
            #expect(service.stub.receivedRequests.last?.messages.count == 1)
        }
    }

    @Test("resume as useChat({resume: true}) calls it: the running reply from its start; 204 when none runs")
    func resumeAndNothingToResume() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let query = "?user_id=\(user.uuidString.lowercased())"
            let none = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/api/chat/never-used/stream\(query)")
            #expect(none.status == 204)

            let original = try await TestHTTP.openEventStream(
                port: service.port, path: "/api/chat",
                json: Self.body(chat: "chat-2", text: "[[stub:slow 50ms x 20]] go", user: user))
            var reader = original.stream.makeAsyncIterator()
            let first = await Self.untilDeltas(1, &reader)
            let resumed = try await TestHTTP.openEventStream(
                port: service.port, method: "GET", path: "/api/chat/chat-2/stream\(query)")
            #expect(resumed.headers["x-vercel-ai-ui-message-stream"] == "v1")
            let again = Self.chunks(await resumed.all())
            let all = Self.chunks(first + (await Self.rest(&reader)))
            func text(_ chunks: [[String: Any]]) -> String {
                chunks.filter { $0["type"] as? String == "text-delta" }.compactMap { $0["delta"] as? String }.joined()
            }
            #expect(text(again) == text(all))
            #expect(Self.shape(Self.types(again)) == Self.shape(Self.types(all)))
            #expect(again.first?["messageId"] as? String == all.first?["messageId"] as? String)
            let after = try await TestHTTP.request(port: service.port, method: "GET", path: "/api/chat/chat-2/stream\(query)")
            #expect(after.status == 204)
        }
    }

    @Test("a Stop ends the stream with abort; an upstream failure with error; regenerate-message asks again as a new turn")
    func abortErrorRegenerate() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let running = try await TestHTTP.openEventStream(
                port: service.port, path: "/api/chat",
                json: Self.body(chat: "chat-3", text: "[[stub:slow 100ms x 40]] long", user: user))
            var reader = running.stream.makeAsyncIterator()
            _ = await Self.untilDeltas(2, &reader)
            let cancelled = try await TestHTTP.request(
                port: service.port, method: "POST", path: "/threads/chat-3/cancel?user_id=\(user.uuidString.lowercased())")
            #expect(cancelled.status == 200)
            let stopped = Self.chunks(await Self.rest(&reader))
            #expect(Self.types(stopped).suffix(2) == ["abort", "[DONE]"])
            #expect(Self.conforms(stopped))

            let failing = try await TestHTTP.openEventStream(
                port: service.port, path: "/api/chat",
                json: Self.body(chat: "chat-4", text: "[[stub:midstream-error after 2]] x", user: user))
            let failed = Self.chunks(await failing.all())
            #expect(Self.conforms(failed))
            #expect(Self.types(failed).suffix(2) == ["error", "[DONE]"])
            #expect((failed.first { $0["type"] as? String == "error" }?["errorText"] as? String)?.isEmpty == false)

            // Regenerate: the same question again as a new turn; the earlier reply stays in the thread.
            let (_, _) = try await service.streamTurn("[[stub:reply first answer]] q", user: user, thread: "chat-5")
            let regenerated = try await TestHTTP.openEventStream(
                port: service.port, path: "/api/chat",
                json: Self.body(
                    chat: "chat-5", text: "[[stub:reply second answer]] q", user: user, trigger: "regenerate-message"))
            #expect(Self.types(Self.chunks(await regenerated.all())).contains("finish"))
            let turns = try #require(
                try await service.repository.turns(userID: user, threadID: "chat-5", limit: 10, beforeSeq: nil))
            #expect(turns.map(\.reply) == ["first answer", "second answer"])
        }
    }

    @Test("bad useChat bodies are 400s naming the field, and write nothing")
    func badBodies() async throws {
        try await ServiceHarness.run { service in
            let user = UUID().uuidString.lowercased()
            func message(_ role: String, _ text: String) -> [String: any Sendable] {
                ["role": role, "parts": [["type": "text", "text": text] as [String: any Sendable]]]
            }
            let hi: [[String: any Sendable]] = [message("user", "hi")]
            let none: [[String: any Sendable]] = []
            let cases: [([String: any Sendable], String)] = [
                (["messages": hi, "user_id": user], "id"),
                (["id": "c", "messages": none, "user_id": user], "messages"),
                (["id": "c", "messages": [message("assistant", "hi")], "user_id": user], "messages"),
                (["id": "c", "messages": [message("user", "  ")], "user_id": user], "messages"),
                (["id": "../x", "messages": hi, "user_id": user], "id"),
                (["id": "c", "trigger": "explode", "messages": hi, "user_id": user], "trigger"),
            ]
            for (body, field) in cases {
                let response = try await TestHTTP.postJSON(port: service.port, path: "/api/chat", json: body)
                #expect(response.status == 400, "\(field)")
                #expect((response.json["error"] as? [String: Any])?["field"] as? String == field)
            }
            let threads = try await service.repository.listThreads(userID: UUID(uuidString: user)!, limit: 10, before: nil)
            #expect(threads.isEmpty)
        }
    }
}
