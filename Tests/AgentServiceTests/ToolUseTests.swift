import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

/// The tool loop end to end: the service over real sockets, real Postgres, the Claude stub (which checks tool_use /
/// tool_result pairing and thinking signatures like the API), and a real MCP server (the official Python SDK's
/// `trouble_server.py` fixture, over stdio).
@Suite("Tool use: MCP tools and search_memory inside a turn", .serialized, .timeLimit(.minutes(4)))
struct ToolUseTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let python = root.appendingPathComponent(".build/mcp-venv/bin/python").path
    static let troubleServer = root.appendingPathComponent("Tests/ToolsTests/Fixtures/trouble_server.py").path

    /// A `TOOLS_CONFIG` file with the trouble server (its tools are `trouble__echo`, `trouble__fail`, …).
    static func toolsConfig(timeoutSeconds: Int = 20) throws -> String {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw HarnessError("no MCP virtualenv at \(python): run scripts/ensure-mcp-venv.sh")
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tools-\(UUID().uuidString).json").path
        let json: [String: Any] = [
            "servers": [
                "trouble": ["command": python, "args": [troubleServer], "timeout_seconds": timeoutSeconds]
            ]
        ]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func withTools(
        timeoutSeconds: Int = 20, configure: @escaping (inout ServiceConfiguration) -> Void = { _ in },
        _ body: (ServiceHarness) async throws -> Void
    ) async throws {
        let config = try toolsConfig(timeoutSeconds: timeoutSeconds)
        defer { try? FileManager.default.removeItem(atPath: config) }
        try await ServiceHarness.run(
            configure: {
                $0.toolsConfigPath = config
                configure(&$0)
            }, body)
    }

    static func toolCalls(_ events: [ReceivedEvent]) -> [[String: Any]] {
        events.compactMap { $0.json["tool_call"] as? [String: Any] }
    }

    static func toolResults(_ events: [ReceivedEvent]) -> [[String: Any]] {
        events.compactMap { $0.json["tool_result"] as? [String: Any] }
    }

    /// The thread's newest stored turn.
    static func latestTurn(_ service: ServiceHarness, user: UUID, thread: String) async throws -> Turn? {
        try await service.repository.turns(userID: user, threadID: thread, limit: 5, beforeSeq: nil)?.first
    }

    static func toolResultBlocks(_ request: StubRequest) -> [StubRequest.Block] {
        (request.messages.last?.blocks ?? []).filter { $0.type == "tool_result" }
    }

    @Test("two tool rounds (two calls in parallel in the first) stream text before, between and after; the stored content replays byte-identically")
    func twoRoundsReplayExactly() async throws {
        try await Self.withTools { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([
                    .text("Let me check."),
                    .toolUse(id: "toolu_a1", name: "trouble__echo", input: #"{"text": "h\u00e9llo \"world\""}"#),
                    .toolUse(id: "toolu_a2", name: "search_memory", input: #"{"query":"zebra","limit":3}"#),
                ]),
                .blocks([
                    .text("One more."), .toolUse(id: "toolu_b1", name: "trouble__echo", input: #"{"text":"again"}"#),
                ]),
                .blocks([.text("All done.")]))
            let (stream, events) = try await service.streamTurn("Use your tools", user: user, thread: "tools-1")
            #expect(stream.status == 200)
            let done = try #require(events.last?.json)
            #expect(done["done"] as? Bool == true, "\(done)")
            #expect(done["stop_reason"] as? String == "end_turn")
            let reply = events.compactMap(\.chunk).joined()
            #expect(reply == "Let me check.\n\nOne more.\n\nAll done.")

            // The tool activity comes between the text it happened between.
            let kinds = events.compactMap { event -> String? in
                if event.chunk != nil { return "chunk" }
                if event.json["tool_call"] != nil { return "call" }
                if event.json["tool_result"] != nil { return "result" }
                return nil
            }
            let compact = kinds.reduce(into: [String]()) { if $0.last != $1 || $1 != "chunk" { $0.append($1) } }
            #expect(compact == ["chunk", "call", "call", "result", "result", "chunk", "call", "result", "chunk"])
            let calls = Self.toolCalls(events)
            #expect(calls.map { $0["id"] as? String } == ["toolu_a1", "toolu_a2", "toolu_b1"])
            #expect((calls.first?["input"] as? [String: Any])?["text"] as? String == "héllo \"world\"")
            let results = Self.toolResults(events)
            #expect(results.allSatisfy { $0["is_error"] as? Bool == false }, "\(results)")
            #expect(results.contains { ($0["summary"] as? String)?.contains("héllo") == true })

            // Three requests; each continuation carries the previous step and its results, answered by id.
            let requests = service.stub.receivedRequests
            try #require(requests.count == 3)
            #expect(requests[0].toolNames.contains("trouble__echo") && requests[0].toolNames.contains("search_memory"))
            let firstResults = Self.toolResultBlocks(requests[1])
            #expect(firstResults.map(\.toolUseID) == ["toolu_a1", "toolu_a2"])
            #expect(firstResults.first?.content?.contains("héllo \"world\"") == true)
            #expect(firstResults.allSatisfy { !$0.isError })
            #expect(Self.toolResultBlocks(requests[2]).map(\.toolUseID) == ["toolu_b1"])

            let turnID = try #require((done["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
            let row = try #require(try await service.repository.turn(userID: user, id: turnID))
            #expect(row.status == .completed)
            #expect(row.reply == reply)
            let content = try #require(row.content)
            #expect(content.contains("toolu_a1") && content.contains("tool_result"))

            // The next turn's history is the stored content: every message of the first turn's last request after
            // the question, byte for byte, then the final step.
            let next = try await service.streamTurn("And now?", user: user, thread: "tools-1")
            #expect(next.events.last?.isDone == true, "\(String(describing: next.events.last?.json))")
            let replayed = try #require(service.stub.receivedRequests.last)
            let sent = requests[2].rawMessages
            try #require(replayed.rawMessages.count == sent.count + 2)
            for index in 1..<sent.count {
                #expect(replayed.rawMessages[index] == sent[index], "message \(index) differs")
            }
            #expect(replayed.messages[sent.count].role == "assistant")
            #expect(replayed.messages[sent.count].text == "All done.")
        }
    }

    @Test("a failing tool, a timeout, 10 MB of output, an unknown tool, invalid JSON input and a crashing server each give an is_error or cut result; the turn completes and is stored")
    func everyToolFailureHasAnOutcome() async throws {
        try await Self.withTools(timeoutSeconds: 3, configure: { $0.toolOutputMaxBytes = 20_000 }) { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([
                    .toolUse(id: "toolu_fail", name: "trouble__fail", input: #"{"reason":"disk on fire"}"#),
                    .toolUse(id: "toolu_slow", name: "trouble__sleep", input: #"{"seconds":30}"#),
                    .toolUse(id: "toolu_big", name: "trouble__big", input: #"{"megabytes":10}"#),
                    .toolUse(id: "toolu_nope", name: "no_such_tool", input: #"{}"#),
                    .toolUse(id: "toolu_bad", name: "trouble__echo", input: #"{"text": "unclosed"#),
                ]),
                .blocks([.toolUse(id: "toolu_crash", name: "trouble__crash", input: "{}")]),
                .blocks([.toolUse(id: "toolu_after", name: "trouble__echo", input: #"{"text":"still here"}"#)]),
                .blocks([.text("Coped.")]))
            let started = ContinuousClock.now
            let (_, events) = try await service.streamTurn("Break things", user: user, thread: "tools-fail")
            let elapsed = ContinuousClock.now - started
            let done = try #require(events.last?.json)
            #expect(done["done"] as? Bool == true, "\(done)")
            // The sleeping tool was given up on at its 3 s timeout, not waited for 30 s.
            #expect(elapsed < .seconds(25), "the turn took \(elapsed)")

            let requests = service.stub.receivedRequests
            try #require(requests.count == 4)
            let first = Dictionary(
                uniqueKeysWithValues: Self.toolResultBlocks(requests[1]).map { ($0.toolUseID ?? "", $0) })
            #expect(first["toolu_fail"]?.isError == true)
            // The official SDK words a raised exception as "Error executing tool fail" (the reason stays server-side).
            #expect(first["toolu_fail"]?.content?.contains("fail") == true, "\(first["toolu_fail"]?.content ?? "nil")")
            #expect(first["toolu_slow"]?.isError == true)
            #expect(first["toolu_slow"]?.content?.contains("timed out") == true)
            let big = try #require(first["toolu_big"]?.content)
            #expect(big.utf8.count < 21_000, "the 10 MB result was not cut (\(big.utf8.count) bytes)")
            #expect(first["toolu_nope"]?.isError == true)
            #expect(first["toolu_nope"]?.content?.contains("unknown tool") == true)
            #expect(first["toolu_bad"]?.isError == true)
            #expect(first["toolu_bad"]?.content?.contains("not valid JSON") == true)
            let crash = try #require(Self.toolResultBlocks(requests[2]).first)
            #expect(crash.isError)
            // The crashed server is started again for the next call.
            let after = try #require(Self.toolResultBlocks(requests[3]).first)
            #expect(!after.isError, "\(after.content ?? "")")
            #expect(after.content?.contains("still here") == true)

            let turnID = try #require((done["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
            let row = try #require(try await service.repository.turn(userID: user, id: turnID))
            #expect(row.status == .completed)
            #expect(row.reply == "Coped.")
            // The unparsable input is stored (and sent back) as {}, which the API accepts.
            #expect(requests[1].messages[1].blocks.first { $0.id == "toolu_bad" }?.input == "{}")
        }
    }

    @Test("search_memory finds a fact from the user's other thread and never another user's")
    func searchMemoryIsScopedToTheUser() async throws {
        try await ServiceHarness.run { service in
            let ada = UUID()
            let eve = UUID()
            _ = try await service.streamTurn("My cat is called Zebedee and lives in Lisbon", user: ada, thread: "ada-1")
            _ = try await service.streamTurn("Eve's cat Zebedee is a secret", user: eve, thread: "eve-1")
            service.stub.enqueue(
                .blocks([.toolUse(id: "toolu_m", name: "search_memory", input: #"{"query":"Zebedee"}"#)]),
                .blocks([.text("Your cat is Zebedee.")]))
            let (_, events) = try await service.streamTurn("What is my cat called?", user: ada, thread: "ada-2")
            #expect(events.last?.isDone == true)
            let result = try #require(Self.toolResultBlocks(service.stub.receivedRequests.last!).first)
            #expect(!result.isError)
            let text = try #require(result.content)
            #expect(text.contains("ada-1") && text.contains("Lisbon"), "\(text)")
            #expect(!text.contains("eve-1") && !text.contains("secret"), "another user's turn leaked: \(text)")
        }
    }

    @Test("MAX_TOOL_ROUNDS ends a turn that keeps asking for tools with stop_reason max_tool_rounds; the next turn's history is valid")
    func maxToolRounds() async throws {
        try await ServiceHarness.run(configure: { $0.maxToolRounds = 2 }) { service in
            let user = UUID()
            for round in 1...3 {
                service.stub.enqueue(
                    .blocks([
                        .text("Round \(round)."),
                        .toolUse(id: "toolu_r\(round)", name: "search_memory", input: #"{"query":"anything"}"#),
                    ]))
            }
            let (_, events) = try await service.streamTurn("Loop forever", user: user, thread: "rounds")
            let done = try #require(events.last?.json)
            #expect(done["done"] as? Bool == true)
            #expect(done["stop_reason"] as? String == "max_tool_rounds")
            #expect(service.stub.receivedRequests.count == 3)
            #expect(Self.toolCalls(events).count == 2, "the third step's call must not be announced or run")
            let turnID = try #require((done["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
            let row = try #require(try await service.repository.turn(userID: user, id: turnID))
            #expect(row.status == .completed && row.stopReason == "max_tool_rounds")
            // The unanswered third call is not replayed (the stub would answer 400).
            let next = try await service.streamTurn("Well?", user: user, thread: "rounds")
            #expect(next.events.last?.isDone == true, "\(String(describing: next.events.last?.json))")
            let history = try #require(service.stub.receivedRequests.last)
            #expect(history.messages.count == 7)  // question, 2 × (call, results), the last step's text, the question
            #expect(history.messages[5].blocks.allSatisfy { $0.type != "tool_use" })
        }
    }

    @Test("a client that disconnects while a tool runs does not stop the turn: it completes and is stored")
    func disconnectMidToolCall() async throws {
        try await Self.withTools { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([.text("Working."), .toolUse(id: "toolu_s", name: "trouble__sleep", input: #"{"seconds":1.5}"#)]),
                .blocks([.text("Finished after the tool.")]))
            let stream = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("Sleep a bit", user: user, thread: "gone"))
            var reader = stream.reader()
            var sawCall = false
            while let event = await reader.next() {
                if event.json["tool_call"] != nil {
                    sawCall = true
                    break
                }
            }
            #expect(sawCall)
            stream.close()
            let stored = try await service.eventually(timeout: .seconds(20)) {
                let turns = try await service.repository.turns(userID: user, threadID: "gone", limit: 5, beforeSeq: nil)
                return turns?.first?.status == .completed
            }
            #expect(stored)
            let turn = try #require(try await Self.latestTurn(service, user: user, thread: "gone"))
            #expect(turn.reply == "Working.\n\nFinished after the tool.")
            #expect(turn.content?.contains("toolu_s") == true)
        }
    }

    @Test("Stop while a tool runs ends the turn at once as cancelled; the stored turn replays without the unanswered call")
    func stopMidToolCall() async throws {
        try await Self.withTools { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([.text("Let me wait."), .toolUse(id: "toolu_w", name: "trouble__sleep", input: #"{"seconds":20}"#)]))
            let stream = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("Wait long", user: user, thread: "stop-tool"))
            var reader = stream.reader()
            while let event = await reader.next(), event.json["tool_call"] == nil {}
            let stopped = ContinuousClock.now
            let answer = try await TestHTTP.request(
                port: service.port, method: "POST",
                path: "/threads/stop-tool/cancel?user_id=\(user.uuidString.lowercased())")
            #expect(answer.status == 200)
            let rest = await reader.rest()
            #expect(ContinuousClock.now - stopped < .seconds(10))
            let done = try #require(rest.last?.json)
            #expect(done["stop_reason"] as? String == "cancelled", "\(done)")
            let turn = try #require(try await Self.latestTurn(service, user: user, thread: "stop-tool"))
            #expect(turn.status == .cancelled)
            #expect(turn.reply == "Let me wait.")
            let next = try await service.streamTurn("Never mind", user: user, thread: "stop-tool")
            #expect(next.events.last?.isDone == true, "\(String(describing: next.events.last?.json))")
            let history = try #require(service.stub.receivedRequests.last)
            #expect(history.messages.count == 3)
            #expect(history.messages[1].blocks.map(\.type) == ["text"])
        }
    }

    @Test("a continuation that fails before its first byte is retried like any step; the tool is not run again and no text repeats")
    func continuationRetried() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([.text("Checking."), .toolUse(id: "toolu_re", name: "search_memory", input: #"{"query":"q"}"#)]),
                .httpError(status: 529), .midStreamError(afterDeltas: 0),
                .blocks([.text("Recovered after two tries.")]))
            let (_, events) = try await service.streamTurn("Retry the second step", user: user, thread: "retry-step")
            let done = try #require(events.last?.json)
            #expect(done["done"] as? Bool == true, "\(done)")
            #expect(events.compactMap(\.chunk).joined() == "Checking.\n\nRecovered after two tries.")
            #expect(Self.toolCalls(events).count == 1 && Self.toolResults(events).count == 1)
            let requests = service.stub.receivedRequests
            try #require(requests.count == 4)
            // Every attempt of the second step sends the same messages: the step and its one result.
            #expect(requests[1].rawMessages == requests[2].rawMessages && requests[2].rawMessages == requests[3].rawMessages)
            #expect(Self.toolResultBlocks(requests[3]).map(\.toolUseID) == ["toolu_re"])
            let turn = try #require(try await Self.latestTurn(service, user: user, thread: "retry-step"))
            #expect(turn.status == .completed)
            #expect(turn.reply == "Checking.\n\nRecovered after two tries.")
        }
    }

    @Test("a stream cut inside a tool input fails the turn as truncated, runs no tool, and stores the text")
    func cutInsideToolInput() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([.text("Calling."), .toolUse(id: "toolu_cut", name: "search_memory", input: #"{"query":"a long query"}"#)])
                    .cutInsideToolInput())
            let (_, events) = try await service.streamTurn("Cut me", user: user, thread: "cut")
            let error = try #require(events.last?.error)
            #expect(error["type"] as? String == "upstream_truncated")
            #expect(Self.toolCalls(events).isEmpty)
            #expect(service.stub.receivedRequests.count == 1)
            let turn = try #require(try await Self.latestTurn(service, user: user, thread: "cut"))
            #expect(turn.status == .failed)
            #expect(turn.reply == "Calling.")
        }
    }

    @Test("extended thinking: streamed only to clients that ask, stored with its signature and sent back with tool use as the API requires")
    func thinkingWithTools() async throws {
        try await ServiceHarness.run(configure: { $0.thinkingBudget = 2_048 }) { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([
                    .thinking("I should search first."),
                    .toolUse(id: "toolu_t", name: "search_memory", input: #"{"query":"plans"}"#),
                ]),
                .blocks([.thinking("Nothing found."), .text("No plans on record.")]))
            let stream = try await TestHTTP.openEventStream(
                port: service.port, path: "/query_stream?thinking=true",
                json: ServiceHarness.body("What are my plans?", user: user, thread: "think"))
            let events = await stream.all()
            #expect(events.last?.isDone == true, "\(String(describing: events.last?.json))")
            let thinking = events.compactMap { $0.json["thinking"] as? String }.joined()
            #expect(thinking == "I should search first.Nothing found.")
            let requests = service.stub.receivedRequests
            try #require(requests.count == 2)
            #expect(requests[0].thinkingBudget == 2_048)
            // The continuation sends the thinking block back first, signature intact (the stub checks it).
            let step = requests[1].messages[1].blocks
            #expect(step.map(\.type) == ["thinking", "tool_use"])
            #expect(step.first?.signature == StubSignature.sign("I should search first."))

            // Without ?thinking=true a client sees none of it; the next turn replays the signed blocks.
            service.stub.enqueue(.blocks([.thinking("Still nothing."), .text("Same answer.")]))
            let (_, plain) = try await service.streamTurn("Again?", user: user, thread: "think")
            #expect(plain.last?.isDone == true, "\(String(describing: plain.last?.json))")
            #expect(!plain.contains { $0.json["thinking"] != nil })
            let history = try #require(service.stub.receivedRequests.last)
            #expect(history.messages[1].blocks.first?.type == "thinking")
            let turn = try #require(try await Self.latestTurn(service, user: user, thread: "think"))
            #expect(turn.content?.contains(StubSignature.sign("Nothing found.")) == true)
        }
    }

    @Test("the AI SDK stream shows a tool round as dynamic tool parts, and the text after it as a new step and text part")
    func aiSDKToolParts() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            service.stub.enqueue(
                .blocks([.text("Looking."), .toolUse(id: "toolu_ui", name: "search_memory", input: #"{"query":"x"}"#)]),
                .blocks([.text("Nothing there.")]))
            let stream = try await TestHTTP.openEventStream(
                port: service.port, path: "/api/chat",
                json: AIChatProtocolTests.body(chat: "ui-tools", text: "Search", user: user))
            let chunks = AIChatProtocolTests.chunks(await stream.all())
            #expect(AIChatProtocolTests.conforms(chunks), "\(chunks)")
            let shape = AIChatProtocolTests.shape(AIChatProtocolTests.types(chunks))
            #expect(
                shape == [
                    "start", "start-step", "text-start", "text-delta", "text-end", "tool-input-start",
                    "tool-input-available", "tool-output-available", "finish-step", "start-step", "text-start",
                    "text-delta", "text-end", "finish-step", "finish", "[DONE]",
                ], "\(shape)")
            let available = try #require(chunks.first { $0["type"] as? String == "tool-input-available" })
            #expect(available["toolCallId"] as? String == "toolu_ui")
            #expect((available["input"] as? [String: Any])?["query"] as? String == "x")
            #expect(chunks.contains { $0["type"] as? String == "text-start" && $0["id"] as? String == "text-2" })
        }
    }
}
