import Claude
import ClaudeStub
import Foundation
import Logging
import Testing

@Suite(.timeLimit(.minutes(2))) struct ClaudeClientErrorTests {
    @Test("400 and 401 fail at once with status, type, message and request id")
    func clientErrors() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(
            .httpError(status: 400, message: "messages: bad"), .httpError(status: 401, message: "invalid x-api-key"))
        let (_, e400) = await h.run(userRequest())
        #expect(e400?.kind == .api)
        #expect(e400?.status == 400)
        #expect(e400?.type == "invalid_request_error")
        #expect(e400?.message == "messages: bad")
        #expect(e400?.requestID == "req_stub_1")
        #expect(e400?.isRetryable == false)
        #expect(e400?.attempts == 1)
        let (_, e401) = await h.run(userRequest())
        #expect(e401?.status == 401)
        #expect(e401?.type == "authentication_error")
        #expect(h.stub.receivedRequests.count == 2)
    }

    @Test("a non-JSON 413 still gives a useful message")
    func nonJSON413() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.nonJSONError(status: 413, body: "<html><h1>413 Request Entity Too Large</h1></html>"))
        let (_, error) = await h.run(userRequest())
        #expect(error?.status == 413)
        #expect(error?.type == nil)
        #expect(error?.message.contains("413 Request Entity Too Large") == true)
        #expect(error?.attempts == 1)
    }

    @Test("429, 500 and 529 are retried maxRetries times, then fail with the attempt count")
    func retriedStatuses() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        for status in [429, 500, 529] {
            h.stub.clearReceivedRequests()
            h.stub.enqueue(.httpError(status: status), .httpError(status: status), .httpError(status: status))
            let (_, error) = await h.run(userRequest())
            #expect(error?.status == status)
            #expect(error?.attempts == 3)
            #expect(error?.isRetryable == true)
            #expect(h.stub.receivedRequests.count == 3)
        }
    }

    @Test("a 529 followed by a good reply succeeds on attempt 2")
    func recovers() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.httpError(status: 529))
        let (events, error) = await h.run(userRequest("ok"))
        #expect(error == nil)
        #expect(events.messageStarts.map(\.attempts) == [2])
        #expect(events.text == "Echo (1 messages): ok")
    }

    @Test("retry-after-ms and retry-after are honoured")
    func retryAfterHonoured() async throws {
        let h = try await StubHarness.start(retryDelayScale: 1.0)
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.httpError(status: 429, headers: [("retry-after-ms", "400"), ("retry-after", "30")]))
        var start = ContinuousClock.now
        let (_, e1) = await h.run(userRequest())
        #expect(e1 == nil)
        var elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(380) && elapsed < .seconds(10))
        h.stub.enqueue(.httpError(status: 429, headers: [("retry-after", "1")]))
        start = ContinuousClock.now
        let (_, e2) = await h.run(userRequest())
        #expect(e2 == nil)
        elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(950) && elapsed < .seconds(10))
    }

    @Test("x-should-retry decides over the status")
    func shouldRetryHeader() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.httpError(status: 500, headers: [("x-should-retry", "false")]))
        let (_, e1) = await h.run(userRequest())
        #expect(e1?.attempts == 1)
        #expect(e1?.isRetryable == false)
        h.stub.enqueue(.httpError(status: 400, headers: [("x-should-retry", "true")]))
        let (_, e2) = await h.run(userRequest())
        #expect(e2 == nil)
    }

    @Test("a 429 spend-limit error without retry-after is not retried")
    func spendLimit() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.httpError(status: 429, message: "spend limit", errorCode: "enforced_spend_limit_reached"))
        let (_, error) = await h.run(userRequest())
        #expect(error?.status == 429)
        #expect(error?.attempts == 1)
        #expect(error?.isRetryable == false)
        #expect(h.stub.receivedRequests.count == 1)
    }

    @Test("an unreachable server is a retried connection error")
    func connectionRefused() async throws {
        let h = try await StubHarness.start()
        let url = h.stub.baseURL
        await h.stub.stop()
        defer { h.http.shutdown() }
        let client = ClaudeClient(
            configuration: .init(apiKey: "k", baseURL: url, retryDelayScale: 0.01), httpClient: h.http,
            logger: .init(label: "t"))
        do {
            for try await _ in client.stream(userRequest()) {}
            Issue.record("expected a failure")
        } catch {
            #expect(error.kind == .connection)
            #expect(error.attempts == 3)
        }
    }
}

@Suite struct RetryPolicyTests {
    let policy = RetryPolicy(maxRetries: 2)

    @Test("statuses 408, 409, 429 and 5xx are retryable; other 4xx are not")
    func statuses() {
        for status in [408, 409, 429, 500, 502, 504, 529] { #expect(policy.isRetryable(status: status, headers: [:])) }
        for status in [400, 401, 403, 404, 413, 422] { #expect(!policy.isRetryable(status: status, headers: [:])) }
        #expect(!policy.isRetryable(status: 529, headers: ["X-Should-Retry": "false"]))
        #expect(policy.isRetryable(status: 400, headers: ["x-should-retry": "true"]))
        #expect(!policy.isRetryable(status: 429, headers: [:], errorCode: "enforced_spend_limit_reached"))
        #expect(
            policy.isRetryable(status: 429, headers: ["retry-after": "5"], errorCode: "enforced_spend_limit_reached"))
    }

    @Test("backoff is 0.5 s doubling, capped at 8 s, minus up to 25 % jitter")
    func backoff() {
        #expect(policy.delay(headers: [:], retriesSoFar: 0, jitter: 0) == .milliseconds(500))
        #expect(policy.delay(headers: [:], retriesSoFar: 1, jitter: 0) == .seconds(1))
        #expect(policy.delay(headers: [:], retriesSoFar: 10, jitter: 0) == .seconds(8))
        #expect(policy.delay(headers: [:], retriesSoFar: 0, jitter: 1) == .milliseconds(375))
        #expect(RetryPolicy(delayScale: 0.01).delay(headers: [:], retriesSoFar: 0, jitter: 0) == .milliseconds(5))
    }

    @Test("retry-after-ms wins, then retry-after seconds or HTTP-date, only if 0 < v ≤ 60 s")
    func retryAfter() {
        #expect(
            policy.delay(headers: ["retry-after-ms": "250", "retry-after": "3"], retriesSoFar: 0, jitter: 0)
                == .milliseconds(250))
        #expect(policy.delay(headers: ["retry-after": "3"], retriesSoFar: 0, jitter: 0) == .seconds(3))
        #expect(policy.delay(headers: ["retry-after": "61"], retriesSoFar: 0, jitter: 0) == .milliseconds(500))
        #expect(policy.delay(headers: ["retry-after": "0"], retriesSoFar: 0, jitter: 0) == .milliseconds(500))
        #expect(policy.delay(headers: ["retry-after": "garbage"], retriesSoFar: 1, jitter: 0) == .seconds(1))
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let date = formatter.string(from: now.addingTimeInterval(10))
        #expect(policy.delay(headers: ["retry-after": date], retriesSoFar: 0, jitter: 0, now: now) == .seconds(10))
    }

    @Test("the budget allows maxRetries retries")
    func budget() {
        #expect(policy.hasBudget(retriesSoFar: 0))
        #expect(policy.hasBudget(retriesSoFar: 1))
        #expect(!policy.hasBudget(retriesSoFar: 2))
    }
}

@Suite struct ModelTests {
    @Test("normalized merges same-role neighbours, drops empty turns and blocks, requires user first and last")
    func normalize() throws {
        let request = MessagesRequest(
            model: "m", maxTokens: 1,
            messages: [
                MessageParam(role: .user, content: [TextBlock("a"), TextBlock("")]),
                MessageParam(role: .user, text: "b"),
                MessageParam(role: .assistant, text: ""), MessageParam(role: .user, text: "c"),
            ]
        )
        let n = try request.normalized()
        #expect(n.messages == [MessageParam(role: .user, content: [TextBlock("a"), TextBlock("b"), TextBlock("c")])])
        #expect(throws: ClaudeError.self) {
            try MessagesRequest(
                model: "m", maxTokens: 1,
                messages: [MessageParam(role: .user, text: "a"), MessageParam(role: .assistant, text: "b")]
            ).normalized()
        }
        #expect(throws: ClaudeError.self) {
            try MessagesRequest(model: "m", maxTokens: 1, messages: [MessageParam(role: .user, text: "")]).normalized()
        }
    }

    @Test("the accumulator overwrites usage from message_delta, never adds")
    func accumulatorUsage() {
        var acc = MessageAccumulator()
        acc.apply(
            .messageStart(
                MessageStart(
                    id: "m", model: "x", usage: Usage(inputTokens: 10, outputTokens: 1, cacheReadInputTokens: 5),
                    requestID: "r", attempts: 1)))
        acc.apply(.contentBlockStart(index: 0, type: "text"))
        acc.apply(.textDelta(index: 0, text: "hi"))
        acc.apply(
            .messageDelta(
                stopReason: "end_turn", stopSequence: nil,
                usage: Usage(inputTokens: 10, outputTokens: 7, cacheReadInputTokens: 5)))
        acc.apply(.messageStop)
        #expect(acc.usage == Usage(inputTokens: 10, outputTokens: 7, cacheReadInputTokens: 5))
        #expect(acc.text == "hi")
        #expect(acc.sawMessageStop)
        #expect(acc.messageID == "m")
    }
}
