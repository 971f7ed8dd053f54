import Claude
import ClaudeStub
import Foundation
import Logging

/// A started stub and a client pointed at it; stop both with `shutdown()`.
struct StubHarness {
    let stub: ClaudeStub
    let client: ClaudeClient
    let http: HTTPClient

    static func start(
        stub stubConfiguration: StubConfiguration = .init(),
        maxRetries: Int = 2,
        retryDelayScale: Double = 0.01,
        idleTimeout: Duration = .seconds(30),
        apiKey: String = "sk-test",
        curlThreads: Int = 1
    ) async throws -> StubHarness {
        let stub = ClaudeStub(configuration: stubConfiguration)
        try await stub.start()
        let http = HTTPClient(
            configuration: .init(connectTimeout: .seconds(5), idleTimeout: idleTimeout, threads: curlThreads))
        var logger = Logger(label: "claude-tests")
        logger.logLevel = .warning
        let client = ClaudeClient(
            configuration: .init(
                apiKey: apiKey, baseURL: stub.baseURL, maxRetries: maxRetries, idleTimeout: idleTimeout,
                retryDelayScale: retryDelayScale
            ),
            httpClient: http,
            logger: logger
        )
        return StubHarness(stub: stub, client: client, http: http)
    }

    func shutdown() async {
        http.shutdown()
        await stub.stop()
    }

    /// Runs a stream to its end and returns the events and the error that ended it, if any.
    func run(_ request: MessagesRequest) async -> (events: [MessageStreamEvent], error: ClaudeError?) {
        var events: [MessageStreamEvent] = []
        do {
            for try await event in client.stream(request) { events.append(event) }
            return (events, nil)
        } catch {
            return (events, error)
        }
    }

    /// Starts `consume` in a task of its own (for a test to cancel it or pull the transport from under it); the task's
    /// value is the error that ended it, nil when it finished.
    func consuming(_ consume: @escaping @Sendable () async throws -> Void) -> Task<ClaudeError?, Never> {
        Task {
            do {
                try await consume()
                return nil
            } catch {
                return error as? ClaudeError
            }
        }
    }

    /// Waits until `condition` holds or `timeout` passes; returns whether it held.
    func eventually(_ timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}

func userRequest(_ text: String = "hello world", history: [MessageParam] = []) -> MessagesRequest {
    MessagesRequest(model: "claude-test", maxTokens: 256, messages: history + [MessageParam(role: .user, text: text)])
}

extension Array where Element == MessageStreamEvent {
    var text: String {
        var accumulator = MessageAccumulator()
        for event in self { accumulator.apply(event) }
        return accumulator.text
    }

    var accumulated: MessageAccumulator {
        var accumulator = MessageAccumulator()
        for event in self { accumulator.apply(event) }
        return accumulator
    }

    var messageStarts: [MessageStart] {
        compactMap {
            if case .messageStart(let start) = $0 { return start }
            return nil
        }
    }

    var textDeltaCount: Int {
        filter {
            if case .textDelta = $0 { return true }
            return false
        }.count
    }
}
