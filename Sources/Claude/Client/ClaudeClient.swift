import Foundation
public import Logging

/// A client of the Claude Messages API (`POST /v1/messages`), streaming or not.
///
/// ```swift
/// let client = ClaudeClient(configuration: .init(apiKey: key), logger: logger)
/// var accumulator = MessageAccumulator()
/// for try await event in client.stream(request) {
///     accumulator.apply(event)
///     if case .textDelta(_, let text) = event { relay(text) }
/// }
/// ```
public final class ClaudeClient: Sendable {
    /// The configuration in use.
    public let configuration: ClaudeConfiguration
    let http: HTTPClient
    let ownsHTTPClient: Bool
    let logger: Logger

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - configuration: key, base URL, retries, timeouts.
    ///   - httpClient: a shared transport; when `nil` the client makes (and ``shutdown()`` stops) its own.
    ///   - logger: where request ids, retries and failures are logged (never prompt text).
    public init(configuration: ClaudeConfiguration, httpClient: HTTPClient? = nil, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        if let httpClient {
            http = httpClient
            ownsHTTPClient = false
        } else {
            http = HTTPClient(
                configuration: .init(
                    connectTimeout: configuration.connectTimeout, idleTimeout: configuration.idleTimeout)
            )
            ownsHTTPClient = true
        }
    }

    /// Streams a reply. Iterating the result sends the request; see ``MessageStream`` for retry and failure rules.
    public func stream(_ request: MessagesRequest) -> MessageStream {
        MessageStream(client: self, request: request)
    }

    /// Sends a non-streaming request (`stream: false`) and returns the whole reply, retrying like ``stream(_:)``.
    public func create(_ request: MessagesRequest) async throws(ClaudeError) -> Message {
        let normalized = try request.normalized()
        var attempts = 0
        let response = try await open(body: normalized.jsonBody(stream: false), stream: false, attempts: &attempts)
        let body: [UInt8]
        do {
            body = try await response.collect(upTo: 64 * 1024 * 1024)
        } catch {
            throw mapTransportError(error, attempts: attempts, afterHead: true)
        }
        let requestID = response.headers["request-id"]
        guard let wire = try? JSONDecoder().decode(WireMessage.self, from: Data(body)) else {
            throw ClaudeError(
                kind: .api, status: response.status,
                message: "the response is not a message: \(String(decoding: body.prefix(200), as: UTF8.self))",
                requestID: requestID, attempts: attempts
            )
        }
        let blocks = wire.content ?? []
        return Message(
            id: wire.id ?? "", model: wire.model ?? "",
            text: blocks.filter { $0.type == "text" }.compactMap(\.text).joined(),
            contentTypes: blocks.map(\.type), stopReason: wire.stop_reason, stopSequence: wire.stop_sequence,
            usage: wire.usage?.merged(into: Usage()) ?? Usage(), requestID: requestID, attempts: attempts
        )
    }

    /// Stops the transport if this client created it.
    public func shutdown() {
        if ownsHTTPClient { http.shutdown() }
    }

    var retryPolicy: RetryPolicy {
        RetryPolicy(maxRetries: configuration.maxRetries, delayScale: configuration.retryDelayScale)
    }

    /// Sends the request until a 2xx response head arrives, retrying per ``RetryPolicy``.
    func open(body: [UInt8], stream: Bool, attempts: inout Int) async throws(ClaudeError) -> HTTPStreamingResponse {
        let policy = retryPolicy
        let url =
            configuration.baseURL.hasSuffix("/")
            ? configuration.baseURL + "v1/messages" : configuration.baseURL + "/v1/messages"
        let request = HTTPRequest(
            method: "POST", url: url,
            headers: [
                ("x-api-key", configuration.apiKey),
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
                ("accept", stream ? "text/event-stream" : "application/json"),
            ],
            body: body
        )
        while true {
            if Task.isCancelled { throw ClaudeError(kind: .cancelled, message: "cancelled", attempts: attempts) }
            attempts += 1
            let retriesSoFar = attempts - 1
            let failure: ClaudeError
            var headers = HTTPHeaders()
            do {
                let response = try await http.execute(request)
                if (200..<300).contains(response.status) { return response }
                headers = response.headers
                let errorBody = (try? await response.collect(upTo: 64 * 1024)) ?? []
                failure =
                    ClaudeError.fromResponse(
                        status: response.status, headers: response.headers, body: errorBody, policy: policy,
                        attempts: attempts
                    ).0
            } catch {
                failure = mapTransportError(error, attempts: attempts, afterHead: false)
            }
            guard failure.isRetryable, policy.hasBudget(retriesSoFar: retriesSoFar) else { throw failure }
            let delay = policy.delay(headers: headers, retriesSoFar: retriesSoFar)
            logger.info(
                "retrying Claude request",
                metadata: [
                    "attempt": "\(attempts)", "status": "\(failure.status.map(String.init) ?? "-")",
                    "type": "\(failure.type ?? failure.kind.description)", "request-id": "\(failure.requestID ?? "-")",
                    "delay": "\(delay)",
                ]
            )
            try await sleep(delay, attempts: attempts)
        }
    }

    func sleep(_ delay: Duration, attempts: Int) async throws(ClaudeError) {
        do {
            try await Task.sleep(for: delay)
        } catch {
            throw ClaudeError(kind: .cancelled, message: "cancelled while waiting to retry", attempts: attempts)
        }
    }

    func mapTransportError(_ error: any Error, attempts: Int, afterHead: Bool, requestID: String? = nil) -> ClaudeError
    {
        if let claude = error as? ClaudeError { return claude }
        guard let http = error as? HTTPClientError else {
            return ClaudeError(
                kind: .connection, message: "\(error)", requestID: requestID, isRetryable: !afterHead,
                attempts: attempts)
        }
        switch http.kind {
        case .cancelled:
            return ClaudeError(
                kind: .cancelled, message: "the request was cancelled", requestID: requestID, attempts: attempts)
        case .stalled:
            return ClaudeError(
                kind: .stalled, message: http.message, requestID: requestID, isRetryable: true, attempts: attempts)
        case .shutdown:
            return ClaudeError(kind: .connection, message: http.message, requestID: requestID, attempts: attempts)
        default:
            if afterHead {
                return ClaudeError(
                    kind: .truncated, status: 200, message: "the stream broke before message_stop: \(http.message)",
                    requestID: requestID, isRetryable: true, attempts: attempts
                )
            }
            return ClaudeError(kind: .connection, message: http.message, isRetryable: true, attempts: attempts)
        }
    }
}
