import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

/// Stop (`POST /threads/{id}/cancel`) and resume (`GET /threads/{id}/stream`) in one process, over real sockets.
@Suite("Stop and resume", .timeLimit(.minutes(2)))
struct StopAndResumeTests {
    static let multibyte = "Grüße aus Köln 🌍 — naïve café, 日本語のテキスト, emoji 👩‍💻 and done"

    static func text(of events: [ReceivedEvent]) -> String { events.compactMap(\.chunk).joined() }

    static func cancel(_ service: ServiceHarness, thread: String, user: UUID) async throws -> TestHTTP.Response {
        try await TestHTTP.request(
            port: service.port, method: "POST", path: "/threads/\(thread)/cancel?user_id=\(user.uuidString.lowercased())")
    }

    static func resume(
        _ service: ServiceHarness, thread: String, user: UUID, lastEventID: String? = nil, after: String? = nil
    ) async throws -> EventStream {
        var path = "/threads/\(thread)/stream?user_id=\(user.uuidString.lowercased())"
        if let after { path += "&after=\(after)" }
        return try await TestHTTP.openEventStream(
            port: service.port, method: "GET", path: path,
            headers: lastEventID.map { ["Last-Event-ID": $0] } ?? [:])
    }

    @Test("Stop mid-reply: done with stop_reason cancelled, the row holds exactly the text received, upstream is closed, and the next turn gets the partial reply as history")
    func stopMidReply() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port,
                json: ServiceHarness.body("[[stub:slow 100ms x 40]] tell me a long story", user: user, thread: "stop-1"))
            #expect(stream.status == 200)
            var reader = stream.reader()
            var received: [ReceivedEvent] = []
            while received.compactMap(\.chunk).count < 3 { received += await reader.untilFirstChunk() }
            #expect(service.stub.activeStreams == 1)

            let answer = try await Self.cancel(service, thread: "stop-1", user: user)
            #expect(answer.status == 200)
            #expect(answer.json["cancelled"] as? Bool == true)
            let turnID = try #require((answer.json["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
            received += await reader.rest()

            let done = try #require(received.last)
            #expect(done.isDone)
            #expect(done.json["stop_reason"] as? String == "cancelled")
            #expect(received.compactMap(\.chunk).count < 40)
            let row = try #require(try await service.repository.turn(userID: user, id: turnID))
            #expect(row.status == .cancelled)
            #expect(row.stopReason == "cancelled")
            #expect(row.reply == Self.text(of: received))
            // The upstream request was cancelled: its connection is gone long before its 4 s would have passed.
            #expect(try await service.eventually(timeout: .seconds(2)) { service.stub.activeStreams == 0 })

            // Nothing runs now.
            let again = try await Self.cancel(service, thread: "stop-1", user: user)
            #expect(again.status == 409)
            #expect((again.json["error"] as? [String: Any])?["type"] as? String == "no_active_turn")

            // The next turn works and replays what the user saw of the stopped one.
            service.stub.clearReceivedRequests()
            let (_, next) = try await service.streamTurn("go on", user: user, thread: "stop-1")
            #expect(next.last?.isDone == true)
            let messages = try #require(service.stub.receivedRequests.last?.messages)
            #expect(messages.map(\.role) == ["user", "assistant", "user"])
            #expect(messages[1].text == row.reply)
        }
    }

    @Test("Stop is scoped like every thread endpoint: another user's thread is 404, a missing thread is 404")
    func stopScoping() async throws {
        try await ServiceHarness.run { service in
            let owner = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("[[stub:slow 100ms x 30]] hi", user: owner, thread: "mine"))
            var reader = stream.reader()
            _ = await reader.untilFirstChunk()
            let stranger = try await Self.cancel(service, thread: "mine", user: UUID())
            #expect(stranger.status == 404)
            let missing = try await Self.cancel(service, thread: "nope", user: owner)
            #expect(missing.status == 404)
            // The owner's turn was untouched by either.
            let rest = await reader.rest()
            #expect(rest.last?.isDone == true)
            #expect(rest.last?.json["stop_reason"] as? String == "end_turn")
        }
    }

    /// A cut-off reading of a stream: the request goes out, the client gets `limit` bytes of the response and drops.
    static func dropAfter(
        _ limit: Int, service: ServiceHarness, question: String, user: UUID, thread: String
    ) async throws -> [ReceivedEvent] {
        let body = try JSONSerialization.data(
            withJSONObject: ServiceHarness.body(question, user: user, thread: thread))
        let request = TestHTTP.requestBytes(
            method: "POST", path: "/query_stream",
            headers: ["Content-Type": "application/json", "Accept": "text/event-stream"], body: Array(body))
        let raw = try await TestHTTP.readPartial(port: service.port, request: request, limit: limit)
        return TestHTTP.completeEvents(inRawResponse: raw)
    }

    @Test("a client that drops after any number of bytes resumes with its last id and gets the rest: no gap, no duplicate, the same end")
    func resumeAfterRandomDrops() async throws {
        var generator = SeededGenerator(seed: UInt64(Date().timeIntervalSince1970))
        let seed = generator.seed
        // Stalls are not what this checks: a process starved for the harness's 2 s idle timeout (seen on a loaded
        // CI machine) must not turn a resume into an `upstream_stalled` ending.
        try await ServiceHarness.run(configure: { $0.claudeIdleTimeoutSeconds = 15 }) { service in
            for round in 0..<12 {
                let user = UUID()
                let thread = "drop-\(round)"
                // 12 ms apart, 48 deltas: some drops resume a running turn, late ones a finished one.
                let question = "[[stub:slow 12ms x 48]] \(Self.multibyte)"
                let limit = Int.random(in: 150...2_600, using: &generator)
                let before = try await Self.dropAfter(
                    limit, service: service, question: question, user: user, thread: thread)
                let lastID = before.last { $0.id != nil }?.id
                let resumed = try await Self.resume(service, thread: thread, user: user, lastEventID: lastID)
                let after = await resumed.all()
                let end = try #require(after.last, "round \(round), drop at \(limit) bytes (seed \(seed))")
                #expect(end.isDone, "round \(round) (seed \(seed))")
                let turnID = try #require((end.json["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
                let row = try #require(try await service.repository.turn(userID: user, id: turnID))
                #expect(row.status == .completed)
                let whole = Self.text(of: before) + Self.text(of: after)
                #expect(
                    whole == row.reply,
                    "round \(round): drop at \(limit) bytes after id \(lastID ?? "none") (seed \(seed))")
                // Every id is the reply's length so far, in UTF-8 bytes.
                var length = Self.text(of: before).utf8.count
                for event in after where event.chunk != nil {
                    length += event.chunk!.utf8.count
                    #expect(event.id == "\(turnID.uuidString.lowercased()):\(length)")
                }
                #expect(end.json["usage"] != nil)
            }
        }
    }

    @Test("resume without an id sends the running turn from its start; several resumers at once; nothing running is 204")
    func resumeWithoutID() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let original = try await TestHTTP.openEventStream(
                port: service.port,
                json: ServiceHarness.body("[[stub:slow 30ms x 30]] \(Self.multibyte)", user: user, thread: "many"))
            var reader = original.reader()
            let first = await reader.untilFirstChunk()
            #expect(first.last?.id != nil)
            async let a = Self.resume(service, thread: "many", user: user).all()
            async let b = Self.resume(service, thread: "many", user: user).all()
            async let c = Self.resume(service, thread: "many", user: user, after: "0").all()
            let mine = first + (await reader.rest())
            let others = try await [a, b, c]
            for other in others {
                #expect(Self.text(of: other) == Self.text(of: mine))
                #expect(other.last?.data == mine.last?.data)
            }
            // The turn has finished: without a position there is nothing to send.
            let idle = try await TestHTTP.request(
                port: service.port, method: "GET",
                path: "/threads/many/stream?user_id=\(user.uuidString.lowercased())")
            #expect(idle.status == 204)
            // With the id of its last chunk, the stored turn answers with just its end.
            let lastID = try #require(mine.last { $0.id != nil }?.id)
            let tail = try await Self.resume(service, thread: "many", user: user, lastEventID: lastID).all()
            #expect(tail.count == 1)
            #expect(tail.last?.data == mine.last?.data)
        }
    }

    @Test("an offset inside a multi-byte character resumes from the start of that character; bad positions are 400/404")
    func resumePositions() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let (_, events) = try await service.streamTurn("[[stub:reply 🌍🌍 ok]] x", user: user, thread: "pos")
            let reply = Self.text(of: events)
            #expect(reply == "🌍🌍 ok")
            let turn = try #require(events.last?.json["turn_id"] as? String)
            // Byte 6 is inside the second globe (bytes 4..<8): the resumed text starts with the whole character.
            let inside = try await Self.resume(service, thread: "pos", user: user, lastEventID: "\(turn):6").all()
            #expect(Self.text(of: inside) == "🌍 ok")
            let bare = try await Self.resume(service, thread: "pos", user: user, after: "8").all()
            #expect(Self.text(of: bare) == " ok")

            let beyond = try await TestHTTP.request(
                port: service.port, method: "GET",
                path: "/threads/pos/stream?user_id=\(user.uuidString.lowercased())&after=\(turn):999")
            #expect(beyond.status == 400)
            let garbage = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/pos/stream?user_id=\(user.uuidString.lowercased())",
                headers: ["Last-Event-ID": "not-an-id"])
            #expect(garbage.status == 400)
            let message = (garbage.json["error"] as? [String: Any])?["message"] as? String
            #expect(message?.contains("Last-Event-ID") == true)
            let otherTurn = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/pos/stream?user_id=\(user.uuidString.lowercased())",
                headers: ["Last-Event-ID": "\(UUID().uuidString.lowercased()):0"])
            #expect(otherTurn.status == 404)
            let stranger = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/pos/stream?user_id=\(UUID().uuidString.lowercased())",
                headers: ["Last-Event-ID": "\(turn):0"])
            #expect(stranger.status == 404)
        }
    }

    @Test("history shows a running turn as streaming with its text so far")
    func historyShowsRunningTurn() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let stream = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("[[stub:slow 100ms x 20]] hi", user: user, thread: "h"))
            var reader = stream.reader()
            var seen = await reader.untilFirstChunk()
            seen += await reader.untilFirstChunk()
            let history = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/h/messages?user_id=\(user.uuidString.lowercased())")
            let messages = try #require(history.json["messages"] as? [[String: Any]])
            let reply = try #require(messages.last)
            #expect(reply["status"] as? String == "streaming")
            let content = try #require(reply["content"] as? String)
            #expect(content.hasPrefix(Self.text(of: seen)))
            #expect(!content.isEmpty)
            _ = await reader.rest()
        }
    }

    @Test("the reply broadcast resumes from every byte offset of a multi-byte text exactly")
    func broadcastEveryOffset() async {
        let text = Self.multibyte
        let reply = ReplyBroadcast()
        for piece in text.split(separator: " ", omittingEmptySubsequences: false).enumerated() {
            reply.append((piece.offset == 0 ? "" : " ") + piece.element)
        }
        reply.finish(.failed(TurnFailureInfo(type: "x", message: "y", retryable: true)))
        let bytes = Array(text.utf8)
        for offset in 0...bytes.count {
            let start = reply.resumePoint(offset)!
            #expect(start <= offset)
            var rest = ""
            for await event in reply.events(from: start) {
                if case .chunk(let chunk, _) = event { rest += chunk }
            }
            #expect(String(decoding: bytes[..<start], as: UTF8.self) + rest == text, "offset \(offset)")
        }
        #expect(reply.resumePoint(bytes.count + 1) == nil)
    }
}

/// A small deterministic generator (SplitMix64), so a failing round can be replayed from its seed.
struct SeededGenerator: RandomNumberGenerator {
    let seed: UInt64
    private var state: UInt64

    init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
