import Claude
import ClaudeStub
import Foundation
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(5))) struct CancellationAndConcurrencyTests {
    @Test("a consumer that stops mid-stream frees its transfer at once")
    func stopMidStream() async throws {
        let h = try await StubHarness.start(stub: .init(deltaInterval: .milliseconds(20), deltaCount: 200))
        defer { Task { await h.shutdown() } }
        var deltas = 0
        for try await event in h.client.stream(userRequest()) {
            if case .textDelta = event { deltas += 1 }
            if deltas == 3 { break }
        }
        #expect(deltas == 3)
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
        #expect(await h.eventually { h.stub.activeStreams == 0 })
    }

    @Test("cancelling the consuming task ends the stream with a cancelled error and frees the transfer")
    func taskCancellation() async throws {
        let h = try await StubHarness.start(stub: .init(deltaInterval: .milliseconds(50), deltaCount: 200))
        defer { Task { await h.shutdown() } }
        let task = h.consuming { for try await _ in h.client.stream(userRequest()) {} }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        let error = await task.value
        #expect(error?.kind == .cancelled)
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test("after 1,000 started-and-cancelled streams live transfers return to zero and connections don't grow")
    func thousandCancelled() async throws {
        let h = try await StubHarness.start(stub: .init(deltaInterval: .milliseconds(10), deltaCount: 500))
        defer { Task { await h.shutdown() } }
        #expect(h.http.liveTransferCount == 0)
        let batch = 50
        for round in 0..<(1000 / batch) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<batch {
                    group.addTask {
                        var iterator = h.client.stream(userRequest("stream \(round)-\(i)")).makeAsyncIterator()
                        while let event = try await iterator.next() {
                            if case .textDelta = event { break }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        #expect(h.stub.receivedRequests.count == 1000)
        #expect(await h.eventually(.seconds(10)) { h.http.liveTransferCount == 0 })
        #expect(h.http.openConnectionCount <= batch)
        #expect(await h.eventually(.seconds(10)) { h.stub.activeStreams == 0 })
    }

    @Test("1,000 concurrent streams through one client complete with byte-exact multi-byte text")
    func thousandConcurrent() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        let results = try await withThrowingTaskGroup(of: (Int, String, Bool).self) { group in
            for i in 0..<1000 {
                group.addTask {
                    var acc = MessageAccumulator()
                    for try await event in h.client.stream(userRequest("#\(i) héllo wörld 日本語 🎉 ✓")) {
                        acc.apply(event)
                    }
                    return (i, acc.text, acc.sawMessageStop)
                }
            }
            var all: [(Int, String, Bool)] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 1000)
        for (i, text, stopped) in results {
            #expect(text == "Echo (1 messages): #\(i) héllo wörld 日本語 🎉 ✓")
            #expect(stopped)
        }
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }
}

@Suite(.timeLimit(.minutes(2))) struct HTTPClientTests {
    @Test("status and headers arrive before the body; header lookup is case-insensitive")
    func head() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.httpError(status: 429, headers: [("Retry-After", "7")]))
        let response = try await h.http.execute(
            HTTPRequest(
                method: "POST", url: h.stub.baseURL + "/v1/messages", headers: [("content-type", "application/json")],
                body: Array("{}".utf8))
        )
        #expect(response.status == 429)
        #expect(response.headers["retry-after"] == "7")
        #expect(response.headers["REQUEST-ID"] == "req_stub_1")
        #expect(response.headers["content-type"] == "application/json")
        let body = try await response.collect(upTo: 1 << 20)
        #expect(String(decoding: body, as: UTF8.self).contains("rate_limit_error"))
    }

    @Test("execute returns once the head arrived, before a slow body")
    func headBeforeBody() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.reply("late").paced(firstDeltaDelay: .seconds(5)))
        let body = Array(
            "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true}"
                .utf8)
        let start = ContinuousClock.now
        let response = try await h.http.execute(
            HTTPRequest(method: "POST", url: h.stub.baseURL + "/v1/messages", body: body))
        // Well before the body's first byte (5 s), with room for a loaded machine.
        #expect(ContinuousClock.now - start < .seconds(3))
        #expect(response.status == 200)
        #expect(response.headers["content-type"] == "text/event-stream; charset=utf-8")
        response.cancel()
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test("a large body read by a slow consumer is paused and resumed, and arrives intact")
    func backpressure() async throws {
        let stub = ClaudeStub()
        try await stub.start()
        let http = HTTPClient(configuration: .init(highWaterMark: 16 * 1024, lowWaterMark: 4 * 1024))
        defer {
            http.shutdown()
            Task { await stub.stop() }
        }
        let text = String(repeating: "wörd ", count: 200_000)
        stub.enqueue(.reply(text))
        let body = Array(
            "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":false}"
                .utf8)
        let response = try await http.execute(
            HTTPRequest(method: "POST", url: stub.baseURL + "/v1/messages", body: body))
        var bytes: [UInt8] = []
        var chunks = 0
        for try await chunk in response {
            bytes += chunk
            chunks += 1
            try await Task.sleep(for: .milliseconds(2))
        }
        let json = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        let content = (json?["content"] as? [[String: Any]])?.first?["text"] as? String
        #expect(content == text)
        #expect(http.backpressurePauseCount > 0)
        #expect(http.liveTransferCount == 0)
    }

    @Test("sequential streams reuse one HTTP/1.1 connection: a completed stream's framing is drained, not cut")
    func connectionReuse() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        for i in 0..<5 {
            let (events, error) = await h.run(userRequest("turn \(i)"))
            #expect(error == nil)
            #expect(events.last == .messageStop)
            #expect(await h.eventually { h.http.liveTransferCount == 0 })
        }
        #expect(h.http.openConnectionCount == 1)
    }

    @Test("collect(upTo:) refuses a body above its limit")
    func collectLimit() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.nonJSONError(status: 500, body: String(repeating: "x", count: 10_000)))
        let response = try await h.http.execute(
            HTTPRequest(method: "POST", url: h.stub.baseURL + "/v1/messages", body: []))
        await #expect(throws: HTTPClientError.self) { try await response.collect(upTo: 100) }
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test("execute after shutdown fails with a shutdown error")
    func afterShutdown() async throws {
        let http = HTTPClient()
        http.shutdown()
        http.shutdown()
        do {
            _ = try await http.execute(HTTPRequest(url: "http://127.0.0.1:1/"))
            Issue.record("expected an error")
        } catch let error as HTTPClientError {
            #expect(error.kind == .shutdown)
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct StubSupportTests {
    @Test("withClaudeStub serves the echo reply non-streamed and stops afterwards")
    func withStub() async throws {
        let url = try await withClaudeStub { stub in
            let http = HTTPClient()
            defer { http.shutdown() }
            let body = Array(
                "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"hi there\"}]}".utf8)
            let response = try await http.execute(
                HTTPRequest(method: "POST", url: stub.baseURL + "/v1/messages", body: body))
            let text = String(decoding: try await response.collect(upTo: 1 << 20), as: UTF8.self)
            #expect(text.contains("Echo (1 messages): hi there"))
            #expect(stub.receivedRequests.first?.stream == false)
            return stub.baseURL
        }
        let http = HTTPClient(configuration: .init(connectTimeout: .seconds(2)))
        defer { http.shutdown() }
        await #expect(throws: HTTPClientError.self) {
            _ = try await http.execute(HTTPRequest(url: url + "/v1/messages"))
        }
    }
}
