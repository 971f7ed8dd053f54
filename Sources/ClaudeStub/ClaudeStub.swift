import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
public import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A local HTTP server speaking the Claude Messages API wire format on `POST /v1/messages`, streaming and not,
/// with its failure modes on demand.
///
/// Each request is answered by, in order of priority: the next enqueued ``StubScenario``; a directive in the last
/// user message (see the grammar on ``StubScenario`` factories and in `StubDirective.swift`: `[[stub:error 529]]`,
/// `[[stub:midstream-error after 2]]`, `[[stub:truncate after 2]]`, `[[stub:reset after 2]]`,
/// `[[stub:stall after 1]]`, `[[stub:slow 100ms x 10]]`, `[[stub:hold-open]]`, `[[stub:stop max_tokens]]`,
/// `[[stub:reply TEXT]]`, `[[stub:fail-first 2 then ok]]`, `[[stub:multi-block]]`, `[[stub:tool NAME {…}]]`, `[[stub:lines crlf]]`,
/// `[[stub:chunks 1-7]]`); otherwise the default reply `Echo (N messages): <last user text>`, one text delta per
/// word. It runs on Hummingbird inside the calling process (no thread per connection) and can share the process
/// with another Hummingbird application.
///
/// ```swift
/// let stub = ClaudeStub()
/// try await stub.start()
/// stub.enqueue(.httpError(status: 529), .reply("hello"))
/// // point a client at stub.baseURL ...
/// await stub.stop()
/// ```
public final class ClaudeStub: Sendable {
    struct State {
        var queue: [StubScenario] = []
        var received: [StubRequest] = []
        var failures: [Int: Int] = [:]
        var cachedPrefixes: Set<Int> = []
        var port = 0
        var host = "127.0.0.1"
        var task: Task<Void, Never>?
        var group: ServiceGroup?
        var counter = 0
    }

    /// The default pacing and formatting.
    public let configuration: StubConfiguration
    let logger: Logger
    private let state = Mutex(State())
    private let active = Atomic<Int>(0)

    /// Creates a stub; call ``start(host:port:)`` to listen.
    public init(configuration: StubConfiguration = .init(), logger: Logger = ClaudeStub.defaultLogger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// A logger that only reports warnings and errors.
    public static var defaultLogger: Logger {
        var logger = Logger(label: "claude-stub")
        logger.logLevel = .warning
        return logger
    }

    /// Starts listening; returns once the socket is bound.
    ///
    /// - Parameters:
    ///   - host: the address to bind.
    ///   - port: the port, 0 for any free one (read it back from ``baseURL``).
    public func start(host: String = "127.0.0.1", port: Int = 0) async throws {
        let router = Router()
        router.post("/v1/messages") { request, _ -> Response in
            try await self.respond(to: request)
        }
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router,
            // A burst of new streams must not overflow the listen queue (Hummingbird defaults to 256).
            configuration: .init(address: .hostname(host, port: port), serverName: nil, backlog: 4_096),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
            },
            logger: logger
        )
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task {
            do {
                try await group.run()
            } catch {
                self.logger.error("claude stub stopped: \(error)")
            }
            continuation.finish()
        }
        var iterator = ports.makeAsyncIterator()
        guard let bound = await iterator.next() else {
            throw StubError(message: "the Claude stub could not listen on \(host):\(port)")
        }
        state.withLock {
            $0.port = bound
            $0.host = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
            $0.task = task
            $0.group = group
        }
    }

    /// The base URL to give a client, e.g. `http://127.0.0.1:54321`.
    public var baseURL: String {
        state.withLock { s in
            let host = s.host.contains(":") ? "[\(s.host)]" : s.host
            return "http://\(host):\(s.port)"
        }
    }

    /// The bound port.
    public var port: Int { state.withLock { $0.port } }

    /// Stops the server: gracefully, then (after `grace`) by cancelling streams still open.
    public func stop(grace: Duration = .milliseconds(500)) async {
        let (task, group) = state.withLock { s -> (Task<Void, Never>?, ServiceGroup?) in
            defer {
                s.task = nil
                s.group = nil
            }
            return (s.task, s.group)
        }
        guard let task else { return }
        await group?.triggerGracefulShutdown()
        let watchdog = Task {
            try await Task.sleep(for: grace)
            task.cancel()
        }
        await task.value
        watchdog.cancel()
    }

    /// Queues scenarios for the next requests, first in first out, ahead of directives and the default.
    public func enqueue(_ scenarios: StubScenario...) {
        state.withLock { $0.queue += scenarios }
    }

    /// The requests received so far.
    public var receivedRequests: [StubRequest] { state.withLock { $0.received } }

    /// Forgets the recorded requests.
    public func clearReceivedRequests() {
        state.withLock { $0.received.removeAll() }
    }

    /// Streams currently being written.
    public var activeStreams: Int { active.load(ordering: .relaxed) }

    // MARK: Handling

    private func respond(to incoming: Request) async throws -> Response {
        let receivedAt = DispatchTime.now().uptimeNanoseconds
        var request = incoming
        let buffer = try await request.collectBody(upTo: 64 * 1024 * 1024)
        let body = Array(buffer.readableBytesView)
        let headers = request.headers.map { (name: $0.name.canonicalName, value: $0.value) }
        let parsed = StubRequest(headers: headers, body: body)
        let lastUser = parsed.messages.last { $0.role == "user" }?.text ?? ""
        let (directive, cleanText) = configuration.honorsDirectives ? StubDirective.parse(lastUser) : (nil, lastUser)
        var bodyHasher = Hasher()
        bodyHasher.combine(body)
        let bodyKey = bodyHasher.finalize()
        // Like the API, a request that breaks the tool-use or thinking rules is a 400 (recorded, consuming nothing).
        if let violation = parsed.toolUseViolation() {
            let number = state.withLock { s -> Int in
                s.received.append(parsed)
                s.counter += 1
                return s.counter
            }
            let requestID = "req_stub_\(number)"
            return jsonResponse(
                status: 400,
                body: StubWire.error(type: "invalid_request_error", message: violation, requestID: requestID),
                requestID: requestID, extra: [])
        }
        let (chosen, requestNumber, failuresSoFar) = state.withLock { s -> (StubScenario, Int, Int) in
            s.received.append(parsed)
            s.counter += 1
            let scenario = s.queue.isEmpty ? (directive ?? .reply()) : s.queue.removeFirst()
            var failures = 0
            if case .failFirst = scenario.behavior {
                failures = s.failures[bodyKey, default: 0]
                s.failures[bodyKey] = failures + 1
            }
            return (scenario, s.counter, failures)
        }
        let requestID = "req_stub_\(requestNumber)"
        var scenario = chosen
        if case .blocks(let blocks) = scenario.behavior {
            var n = 0
            scenario.behavior = .blocks(
                blocks.map { block in
                    guard case .toolUse(let id, let name, let input) = block, id.isEmpty else { return block }
                    n += 1
                    return .toolUse(id: "toolu_stub_\(requestNumber)_\(n)", name: name, input: input)
                })
        }
        switch scenario.behavior {
        case .httpError(let status, let type, let message, let extra, let code):
            return jsonResponse(
                status: status,
                body: StubWire.error(type: type, message: message, requestID: requestID, errorCode: code),
                requestID: requestID, extra: extra)
        case .nonJSONError(let status, let text):
            var fields = HTTPFields()
            fields[.contentType] = "text/html"
            return Response(
                status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(string: text)))
        case .failFirst(let n) where failuresSoFar < n:
            return jsonResponse(
                status: 529,
                body: StubWire.error(type: "overloaded_error", message: "Overloaded", requestID: requestID),
                requestID: requestID, extra: [])
        default:
            break
        }
        let replyText: String
        if case .reply(let text?) = scenario.behavior {
            replyText = text
        } else if parsed.answersTools {
            replyText = parsed.toolResultsReply
        } else {
            replyText = "Echo (\(parsed.messages.count) messages): \(cleanText)"
        }
        let usage = cacheUsage(for: parsed, reply: replyText)
        let model = parsed.model ?? configuration.defaultModel
        let messageID = "msg_stub_\(requestNumber)"
        let deltaCount = scenario.deltaCount ?? configuration.deltaCount
        let pieces = StubWire.pieces(replyText, count: deltaCount)
        if !parsed.stream {
            let stop = scenario.stopReason
            var content = "[{\"type\":\"text\",\"text\":\(StubWire.string(pieces.joined()))}]"
            if case .blocks(let blocks) = scenario.behavior {
                content = "[" + blocks.map(StubWire.block).joined(separator: ",") + "]"
            }
            let json =
                "{\"id\":\(StubWire.string(messageID)),\"type\":\"message\",\"role\":\"assistant\",\"model\":\(StubWire.string(model)),"
                + "\"content\":\(content),\"stop_reason\":\(StubWire.string(stop)),"
                + "\"stop_sequence\":\(scenario.stopSequence.map(StubWire.string) ?? "null"),"
                + "\"usage\":\(StubWire.usage(input: usage.input, output: pieces.count, cacheCreation: usage.creation, cacheRead: usage.read))}"
            return jsonResponse(status: 200, body: json, requestID: requestID, extra: [])
        }
        var fields = HTTPFields()
        fields[.contentType] = "text/event-stream; charset=utf-8"
        fields[.cacheControl] = "no-cache"
        fields[HTTPField.Name("request-id")!] = requestID
        let plan = StreamPlan(
            scenario: scenario, configuration: configuration, pieces: pieces, model: model, messageID: messageID,
            usage: usage, receivedAt: receivedAt
        )
        let streamRequest = request
        let responseBody = ResponseBody { [self] writer in
            active.add(1, ordering: .relaxed)
            defer { active.subtract(1, ordering: .relaxed) }
            try await plan.write(
                to: &writer,
                holdOpen: {
                    _ = try? await streamRequest.body.consumeWithCancellationOnInboundClose { _ in
                        try await Task.sleep(for: .seconds(600))
                    }
                })
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: fields, body: responseBody)
    }

    private func jsonResponse(status: Int, body: String, requestID: String, extra: [(String, String)]) -> Response {
        var fields = HTTPFields()
        fields[.contentType] = "application/json"
        fields[HTTPField.Name("request-id")!] = requestID
        for (name, value) in extra {
            if let n = HTTPField.Name(name) { fields[n] = value }
        }
        return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    /// Plausible usage: input ≈ words; with a cache breakpoint, a prefix seen before counts as a cache read.
    private func cacheUsage(for request: StubRequest, reply: String) -> (input: Int, creation: Int, read: Int) {
        func key(_ messages: [StubRequest.Message]) -> Int {
            var h = Hasher()
            h.combine(request.system)
            for m in messages {
                h.combine(m.role)
                h.combine(m.text)
            }
            return h.finalize()
        }
        let total = request.inputWordCount
        guard request.hasCacheControl else { return (total, 0, 0) }
        let prefix = Array(request.messages.dropLast())
        let lastWords = request.messages.last.map { $0.text.split(separator: " ").count } ?? 0
        let next = key(request.messages + [StubRequest.Message(role: "assistant", text: reply)])
        return state.withLock { s in
            s.cachedPrefixes.insert(next)
            if !prefix.isEmpty, s.cachedPrefixes.contains(key(prefix)) {
                return (0, lastWords, max(0, total - lastWords))
            }
            return (0, total, 0)
        }
    }
}

/// A failure to start the stub.
public struct StubError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    /// The message.
    public var description: String { message }
}
