/// A failure of a Claude request or stream.
///
/// `description` is generic enough for logs (no prompt text); `message` carries the API's explanation.
public struct ClaudeError: Error, Sendable, CustomStringConvertible {
    /// The category of failure, extensible without breaking callers.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        enum Base: String, Sendable, Hashable {
            case api, truncated, stalled, connection, invalidRequest, cancelled
        }
        let base: Base
        /// The API answered with an error: a non-2xx status, or an `event: error` in the stream (status 200).
        public static let api = Kind(base: .api)
        /// The stream ended (cleanly or by a reset) before `message_stop`.
        public static let truncated = Kind(base: .truncated)
        /// No bytes arrived for longer than the idle timeout.
        public static let stalled = Kind(base: .stalled)
        /// The connection could not be made or broke before the response began.
        public static let connection = Kind(base: .connection)
        /// The request was rejected locally before sending (see ``MessagesRequest/normalized()``).
        public static let invalidRequest = Kind(base: .invalidRequest)
        /// The consumer's task was cancelled.
        public static let cancelled = Kind(base: .cancelled)
        /// The kind's name.
        public var description: String { base.rawValue }
    }

    /// The category of failure.
    public var kind: Kind
    /// The HTTP status (200 for an error event inside a stream), if a response arrived.
    public var status: Int?
    /// The API's `error.type`, e.g. `overloaded_error`.
    public var type: String?
    /// A human-readable explanation.
    public var message: String
    /// The API's request id, from the `request-id` header or the body's `request_id`.
    public var requestID: String?
    /// Whether retrying the same request later may succeed.
    public var isRetryable: Bool
    /// How many HTTP attempts were made.
    public var attempts: Int
    /// The wait the server asked for before a retry (`retry-after-ms` or `retry-after`, honoured when within 60 s).
    public var retryAfter: Duration?

    /// Creates an error.
    public init(
        kind: Kind, status: Int? = nil, type: String? = nil, message: String, requestID: String? = nil,
        isRetryable: Bool = false, attempts: Int = 0, retryAfter: Duration? = nil
    ) {
        self.retryAfter = retryAfter
        self.kind = kind
        self.status = status
        self.type = type
        self.message = message
        self.requestID = requestID
        self.isRetryable = isRetryable
        self.attempts = attempts
    }

    /// Kind, status, type and request id: no message text, which may echo user content.
    public var description: String {
        var parts = ["ClaudeError.\(kind)"]
        if let status { parts.append("status \(status)") }
        if let type { parts.append(type) }
        if let requestID { parts.append("request-id \(requestID)") }
        parts.append("attempts \(attempts)")
        return parts.joined(separator: ", ")
    }
}
