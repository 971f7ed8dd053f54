import Claude
import ClaudeStub
import Foundation
import Testing

@Suite(.timeLimit(.minutes(2))) struct ClaudeClientStreamTests {
    @Test("a normal stream with pings and padded JSON yields the echo reply, usage and end_turn")
    func normalStream() async throws {
        let h = try await StubHarness.start(stub: .init(pingEvery: 2, padJSON: true))
        defer { Task { await h.shutdown() } }
        let (events, error) = await h.run(userRequest("hello there world"))
        #expect(error == nil)
        let acc = events.accumulated
        #expect(acc.text == "Echo (1 messages): hello there world")
        #expect(acc.sawMessageStop)
        #expect(acc.stopReason == "end_turn")
        #expect(acc.usage.outputTokens == events.textDeltaCount)
        #expect(acc.usage.inputTokens == 3)
        #expect(acc.requestID == "req_stub_1")
        #expect(events.contains(.ping))
        #expect(events.messageStarts.first?.attempts == 1)
        #expect(events.last == .messageStop)
    }

    @Test("arbitrary chunk boundaries inside UTF-8 sequences and CRLFs still give byte-exact text")
    func chunking() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        let text = "héllo wörld 日本語 🎉 \u{2028} известни — ✓"
        for ending in [StubScenario.LineEnding.crlf, .lf, .cr] {
            h.stub.enqueue(.reply(text).lineEnding(ending).chunkSize(1...7).paddedJSON())
            let (events, error) = await h.run(userRequest())
            #expect(error == nil)
            #expect(events.text == text, "line ending \(ending)")
        }
    }

    @Test("CRLF, LF and CR line endings each decode to the same reply")
    func lineEndings() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        for ending in [StubScenario.LineEnding.crlf, .lf, .cr] {
            h.stub.enqueue(.lineEnding(ending))
            let (events, error) = await h.run(userRequest("abc def"))
            #expect(error == nil)
            #expect(events.text == "Echo (1 messages): abc def")
        }
    }

    @Test("SSE comments in the stream are ignored")
    func comments() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.comments)
        let (events, error) = await h.run(userRequest("x y"))
        #expect(error == nil)
        #expect(events.text == "Echo (1 messages): x y")
    }

    @Test("a mid-stream error event is a typed api error with status 200, not retried")
    func midStreamError() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.midStreamError(afterDeltas: 2))
        let (events, error) = await h.run(userRequest("one two three four"))
        #expect(error?.kind == .api)
        #expect(error?.status == 200)
        #expect(error?.type == "overloaded_error")
        #expect(error?.requestID == "req_stub_1")
        #expect(error?.isRetryable == false)
        #expect(events.textDeltaCount == 2)
        #expect(h.stub.receivedRequests.count == 1)
    }

    @Test("a stream ending cleanly without message_stop is truncated, not success")
    func truncatedCleanly() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.truncate(afterDeltas: 2))
        let (events, error) = await h.run(userRequest("one two three four"))
        #expect(error?.kind == .truncated)
        #expect(events.textDeltaCount == 2)
        #expect(h.stub.receivedRequests.count == 1)
    }

    @Test("a stream cut by an abrupt connection close is truncated")
    func truncatedByReset() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.truncateByReset(afterDeltas: 2))
        let (events, error) = await h.run(userRequest("one two three four"))
        #expect(error?.kind == .truncated)
        #expect(events.textDeltaCount == 2)
    }

    @Test("a failure before any content is retried invisibly: one message_start, attempts 2")
    func retryBeforeContentIsInvisible() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.truncate(afterDeltas: 0).pings(every: 0))
        let (events, error) = await h.run(userRequest("a b"))
        #expect(error == nil)
        #expect(events.messageStarts.count == 1)
        #expect(events.messageStarts.first?.attempts == 2)
        #expect(events.text == "Echo (1 messages): a b")
        #expect(h.stub.receivedRequests.count == 2)
    }

    @Test("an error event before any content is retried like a pre-stream error")
    func errorEventBeforeContent() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.midStreamError(afterDeltas: 0))
        let (events, error) = await h.run(userRequest("z"))
        #expect(error == nil)
        #expect(events.messageStarts.map(\.attempts) == [2])
        #expect(events.text == "Echo (1 messages): z")
    }

    @Test("a stalled stream is ended by the idle watchdog as stalled")
    func stall() async throws {
        // 3 s of silence: long enough that a loaded machine still delivers the first delta, far short of the 30 s
        // default a missing watchdog would leave.
        let h = try await StubHarness.start(idleTimeout: .seconds(3))
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.stall(afterDeltas: 1))
        let start = ContinuousClock.now
        let (events, error) = await h.run(userRequest("one two three"))
        #expect(error?.kind == .stalled)
        #expect(events.textDeltaCount == 1)
        #expect(ContinuousClock.now - start < .seconds(15))
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test("a socket held open after message_stop does not delay the end of the stream")
    func holdOpen() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.holdOpenAfterStop)
        let start = ContinuousClock.now
        let (events, error) = await h.run(userRequest("x"))
        #expect(error == nil)
        #expect(events.last == .messageStop)
        // The held socket would keep the stream open until the 30 s idle timeout; a loaded machine may take seconds.
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(await h.eventually(.seconds(15)) { h.http.liveTransferCount == 0 && h.stub.activeStreams == 0 })
    }

    @Test("multi-block output accumulates text only from text blocks and tolerates other deltas")
    func multiBlock() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.multiBlock)
        let (events, error) = await h.run(userRequest("q"))
        #expect(error == nil)
        let acc = events.accumulated
        #expect(acc.text == "Echo (1 messages): q")
        #expect(acc.stopReason == "tool_use")
        #expect(events.contains(.thinkingDelta(index: 0, thinking: "Let me think")))
        #expect(events.contains(.signatureDelta(index: 0, signature: "c2lnbmF0dXJl")))
        #expect(events.contains(.toolUseStart(index: 2, id: "toolu_stub", name: "lookup")))
        #expect(events.contains { if case .inputJSONDelta(2, _) = $0 { true } else { false } })
        // The accumulated step: thinking with its signature, the text, and the tool call with its parsed input.
        let calls = acc.toolCalls
        #expect(calls.count == 1 && calls.first?.block.name == "lookup" && calls.first?.inputError == nil)
        #expect(acc.thinkingText == "Let me think about it.")
        guard case .thinking(let thinking)? = acc.contentBlocks.first else {
            Issue.record("the first block is not thinking: \(acc.contentBlocks)")
            return
        }
        #expect(thinking.signature == "c2lnbmF0dXJl")
    }

    @Test("max_tokens, stop_sequence and refusal stop reasons come through")
    func stopReasons() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(
            .stopReason("max_tokens"), .stopReason("stop_sequence", stopSequence: "END"), .stopReason("refusal"))
        let a = await h.run(userRequest()).events.accumulated
        let b = await h.run(userRequest()).events.accumulated
        let c = await h.run(userRequest()).events.accumulated
        #expect(a.stopReason == "max_tokens")
        #expect(b.stopReason == "stop_sequence")
        #expect(b.stopSequence == "END")
        #expect(c.stopReason == "refusal")
        #expect(a.sawMessageStop && b.sawMessageStop && c.sawMessageStop)
    }

    @Test("history of N messages reaches the stub, same-role neighbours merged")
    func history() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        let history = [
            MessageParam(role: .user, text: "first"), MessageParam(role: .user, text: "again"),
            MessageParam(role: .assistant, text: "answer"), MessageParam(role: .assistant, text: ""),
        ]
        let (events, error) = await h.run(userRequest("third", history: history))
        #expect(error == nil)
        #expect(events.text == "Echo (3 messages): third")
        let received = try #require(h.stub.receivedRequests.first)
        #expect(received.messages.map(\.role) == ["user", "assistant", "user"])
        #expect(received.messages.map(\.text) == ["first\nagain", "answer", "third"])
        #expect(received.stream)
        #expect(received.model == "claude-test")
    }

    @Test("request headers are exactly the API's: key, version, content type, accept; nothing else from callers")
    func headers() async throws {
        let h = try await StubHarness.start(apiKey: "sk-secret")
        defer { Task { await h.shutdown() } }
        _ = await h.run(userRequest())
        let received = try #require(h.stub.receivedRequests.first)
        #expect(received.header("x-api-key") == "sk-secret")
        #expect(received.header("anthropic-version") == "2023-06-01")
        #expect(received.header("content-type") == "application/json")
        #expect(received.header("accept") == "text/event-stream")
        let names = Set(received.headers.map(\.name))
        #expect(
            names.isSubset(of: ["host", "x-api-key", "anthropic-version", "content-type", "accept", "content-length"]))
    }

    @Test("a stub directive in the user's text selects the scenario: fail-first 2 then ok retries to success")
    func directives() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        let (events, error) = await h.run(userRequest("[[stub:fail-first 2 then ok]] hi"))
        #expect(error == nil)
        #expect(events.messageStarts.first?.attempts == 3)
        #expect(events.text == "Echo (1 messages): hi")
        let (e2, err2) = await h.run(userRequest("[[stub:reply Grüße aus 東京]]"))
        #expect(err2 == nil)
        #expect(e2.text == "Grüße aus 東京")
        let (_, err3) = await h.run(userRequest("[[stub:midstream-error after 1]] a b c"))
        #expect(err3?.type == "overloaded_error")
        let (e4, _) = await h.run(userRequest("[[stub:stop max_tokens]] a"))
        #expect(e4.accumulated.stopReason == "max_tokens")
        let (e5, _) = await h.run(userRequest("[[stub:slow 5ms x 6]] a b"))
        #expect(e5.textDeltaCount == 6)
        let (_, err6) = await h.run(userRequest("[[stub:error 529]] x"))
        #expect(err6?.status == 529)
        #expect(err6?.attempts == 3)
        let (_, err7) = await h.run(userRequest("[[stub:truncate after 1]] a b c"))
        #expect(err7?.kind == .truncated)
        let (_, err8) = await h.run(userRequest("[[stub:reset after 1]] a b c"))
        #expect(err8?.kind == .truncated)
        let (e9, err9) = await h.run(userRequest("[[stub:hold-open]] a b c"))
        #expect(err9 == nil && e9.last == .messageStop)
        let (e10, err10) = await h.run(userRequest("[[stub:lines cr]] [[stub:ignored]] é"))
        #expect(err10 == nil)
        #expect(e10.text == "Echo (1 messages): [[stub:ignored]] é")
        let (e11, _) = await h.run(userRequest("[[stub:chunks 1-3]] 日本語 ok"))
        #expect(e11.text == "Echo (1 messages): 日本語 ok")
        let (e12, _) = await h.run(userRequest("[[stub:multi-block]] q"))
        #expect(e12.accumulated.stopReason == "tool_use")
    }

    @Test("non-streaming create returns the whole message")
    func create() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        let message = try await h.client.create(userRequest("non streaming"))
        #expect(message.text == "Echo (1 messages): non streaming")
        #expect(message.stopReason == "end_turn")
        #expect(message.usage.outputTokens == 5)
        #expect(message.requestID == "req_stub_1")
        #expect(h.stub.receivedRequests.first?.stream == false)
    }

    @Test("an invalid conversation is rejected locally without a request")
    func invalidRequest() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        let request = MessagesRequest(model: "m", maxTokens: 1, messages: [MessageParam(role: .assistant, text: "hi")])
        let (_, error) = await h.run(request)
        #expect(error?.kind == .invalidRequest)
        #expect(h.stub.receivedRequests.isEmpty)
    }
}
