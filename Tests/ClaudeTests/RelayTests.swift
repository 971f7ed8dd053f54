import Claude
import ClaudeStub
import Foundation
import Testing

/// The name of the calling thread, as the kernel knows it.
private func currentThreadName() -> String {
    let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
    return name.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// The kernel's id of the calling thread (from `/proc/thread-self`, a link to `<pid>/task/<tid>`).
private func currentThreadID() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self"))?
        .split(separator: "/").last.map(String.init) ?? ""
}

private final class Recorder: @unchecked Sendable {  // touched by one relay at a time, then read after it returned
    var events: [MessageStreamEvent] = []
    var threads: [String] = []
    var threadIDs: [String] = []
}

@Suite(.timeLimit(.minutes(2))) struct RelayTests {
    @Test("relay hands over the same events as iterating, in order, each on the curl thread that read it")
    func relayMatchesIteration() async throws {
        let h = try await StubHarness.start(stub: .init(deltaInterval: .milliseconds(2)))
        defer { Task { await h.shutdown() } }
        let text = "one two three four five six seven eight nine ten"
        let (iterated, iterationError) = await h.run(userRequest(text))
        #expect(iterationError == nil)
        let recorder = Recorder()
        try await h.client.stream(userRequest(text)).relay { event in
            recorder.events.append(event)
            recorder.threads.append(currentThreadName())
        }
        #expect(recorder.events.text == iterated.text)
        #expect(recorder.events.textDeltaCount == iterated.textDeltaCount)
        #expect(recorder.events.textDeltaCount > 5)
        #expect(recorder.events.last == .messageStop)
        #expect(recorder.threads.count == recorder.events.count)
        // Every event, the first ones held back until the first content included, was delivered in the write
        // callback that read it: none waited for a pool thread.
        #expect(recorder.threads.allSatisfy { $0 == "curl-multi" }, "\(Set(recorder.threads))")
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test("a relay that fails before content is retried like iteration, and one that fails after it throws")
    func relayFailures() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.httpError(status: 529))
        let recorder = Recorder()
        try await h.client.stream(userRequest("a b c")).relay { recorder.events.append($0) }
        #expect(recorder.events.text == "Echo (1 messages): a b c")
        #expect(recorder.events.messageStarts.first?.attempts == 2)

        h.stub.enqueue(.midStreamError(afterDeltas: 2))
        let failed = Recorder()
        await #expect(throws: ClaudeError.self) {
            try await h.client.stream(userRequest("one two three four")).relay { failed.events.append($0) }
        }
        #expect(failed.events.textDeltaCount == 2)
    }

    @Test(
        "a pushed body that fails before its first content is retried invisibly: one message_start, attempts 2",
        arguments: [
            StubScenario.truncate(afterDeltas: 0), .truncateByReset(afterDeltas: 0), .midStreamError(afterDeltas: 0),
        ])
    func relayRetriesBeforeContent(scenario: StubScenario) async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(scenario)
        let recorder = Recorder()
        try await h.client.stream(userRequest("a b c")).relay { recorder.events.append($0) }
        #expect(recorder.events.text == "Echo (1 messages): a b c")
        #expect(recorder.events.messageStarts.map(\.attempts) == [2])
        #expect(h.stub.receivedRequests.count == 2)
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test(
        "a pushed body that ends early is reported as iteration reports it, after the deltas before it, and frees the transfer",
        arguments: [
            (StubScenario.truncate(afterDeltas: 3), ClaudeError.Kind.truncated),
            (.truncateByReset(afterDeltas: 3), .truncated), (.stall(afterDeltas: 3), .stalled),
            (.midStreamError(afterDeltas: 3), .api),
        ])
    func relayEndsEarly(scenario: StubScenario, kind: ClaudeError.Kind) async throws {
        let h = try await StubHarness.start(idleTimeout: .seconds(3))
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(scenario)
        let recorder = Recorder()
        let task = h.consuming {
            try await h.client.stream(userRequest("one two three four five six")).relay { recorder.events.append($0) }
        }
        let error = await task.value
        #expect(error?.kind == kind)
        #expect(error?.isRetryable == false, "content was delivered")
        #expect(recorder.events.textDeltaCount == 3)
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test("a relay returns at message_stop although the server holds the socket open")
    func relayHoldOpen() async throws {
        let h = try await StubHarness.start()
        defer { Task { await h.shutdown() } }
        h.stub.enqueue(.holdOpenAfterStop)
        let recorder = Recorder()
        let start = ContinuousClock.now
        try await h.client.stream(userRequest("x y z")).relay { recorder.events.append($0) }
        #expect(recorder.events.last == .messageStop)
        // The held socket would keep the relay waiting until the 30 s idle timeout.
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(await h.eventually(.seconds(15)) { h.http.liveTransferCount == 0 && h.stub.activeStreams == 0 })
    }

    @Test("cancelling a relaying task ends it with a cancelled error and frees the transfer")
    func relayCancelled() async throws {
        let h = try await StubHarness.start(stub: .init(deltaInterval: .milliseconds(20), deltaCount: 500))
        defer { Task { await h.shutdown() } }
        let recorder = Recorder()
        let task = h.consuming { try await h.client.stream(userRequest()).relay { recorder.events.append($0) } }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        let error = await task.value
        #expect(error?.kind == .cancelled)
        #expect(recorder.events.textDeltaCount > 0)
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }

    @Test("shutting the transport down under a relay ends the relay with an error instead of stranding it")
    func relayAcrossShutdown() async throws {
        let h = try await StubHarness.start(stub: .init(deltaInterval: .milliseconds(20), deltaCount: 500))
        defer { Task { await h.stub.stop() } }
        let recorder = Recorder()
        let task = h.consuming { try await h.client.stream(userRequest()).relay { recorder.events.append($0) } }
        try await Task.sleep(for: .milliseconds(200))
        h.http.shutdown()
        let error = await task.value
        #expect(error != nil)
        #expect(recorder.events.textDeltaCount > 0)
        // The loop is gone: a new relay fails at once rather than waiting on it.
        await #expect(throws: ClaudeError.self) {
            try await h.client.stream(userRequest()).relay { _ in }
        }
    }

    @Test("with three curl threads, 60 concurrent relays are byte-exact, each pushed by one curl thread, none left live")
    func severalCurlThreads() async throws {
        let h = try await StubHarness.start(stub: .init(deltaInterval: .milliseconds(2)), curlThreads: 3)
        defer { Task { await h.shutdown() } }
        let client = h.client
        let results = try await withThrowingTaskGroup(of: (String, String, Set<String>, Set<String>).self) { group in
            for index in 0..<60 {
                group.addTask {
                    let question = "stream \(index) héllo wörld 🎉"
                    let recorder = Recorder()
                    try await client.stream(userRequest(question)).relay { event in
                        recorder.events.append(event)
                        recorder.threads.append(currentThreadName())
                        recorder.threadIDs.append(currentThreadID())
                    }
                    return (question, recorder.events.text, Set(recorder.threads), Set(recorder.threadIDs))
                }
            }
            var all: [(String, String, Set<String>, Set<String>)] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 60)
        for (question, text, threads, ids) in results {
            #expect(text == "Echo (1 messages): \(question)")
            #expect(threads == ["curl-multi"], "\(threads)")
            #expect(ids.count == 1, "one stream, one curl thread")
        }
        // The transfers went to the three loops in turn.
        #expect(Set(results.flatMap(\.3)).count == 3)
        #expect(h.http.configuration.threads == 3)
        #expect(await h.eventually { h.http.liveTransferCount == 0 })
    }
}

