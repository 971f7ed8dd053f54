/// Response or request header fields, in order, with case-insensitive lookup.
public struct HTTPHeaders: Sendable, Sequence, ExpressibleByDictionaryLiteral {
    /// The fields in the order received.
    public private(set) var fields: [(name: String, value: String)]

    /// Creates headers from name/value pairs.
    public init(_ fields: [(String, String)] = []) {
        self.fields = fields.map { (name: $0.0, value: $0.1) }
    }

    /// Creates headers from a literal.
    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    /// The first value of `name` (case-insensitive), or `nil`.
    public subscript(name: String) -> String? {
        let lower = name.lowercased()
        return fields.first { $0.name.lowercased() == lower }?.value
    }

    /// All values of `name` (case-insensitive).
    public func values(for name: String) -> [String] {
        let lower = name.lowercased()
        return fields.filter { $0.name.lowercased() == lower }.map(\.value)
    }

    /// Appends a field.
    public mutating func add(name: String, value: String) {
        fields.append((name: name, value: value))
    }

    /// Iterates the fields in order.
    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> {
        fields.makeIterator()
    }
}

/// A request for ``HTTPClient``.
public struct HTTPRequest: Sendable {
    /// The method, e.g. `GET` or `POST`.
    public var method: String
    /// The absolute URL (`http://` or `https://`).
    public var url: String
    /// Header fields sent as given (the transport adds only `host`, and `content-length` when a body is set).
    public var headers: [(String, String)]
    /// The request body, if any.
    public var body: [UInt8]?

    /// Creates a request.
    public init(method: String = "GET", url: String, headers: [(String, String)] = [], body: [UInt8]? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// A failure of the HTTP transport.
///
/// `description` is deliberately short; `message` carries libcurl's explanation.
public struct HTTPClientError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, extensible without breaking callers.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        enum Base: String, Sendable, Hashable {
            case connectTimeout, connection, stalled, cancelled, shutdown, bodyTooLarge, invalidRequest
        }
        let base: Base
        /// Connecting took longer than the configured connect timeout.
        public static let connectTimeout = Kind(base: .connectTimeout)
        /// The connection could not be made or broke (reset, refused, TLS, protocol error).
        public static let connection = Kind(base: .connection)
        /// No bytes arrived for longer than the idle timeout.
        public static let stalled = Kind(base: .stalled)
        /// The consumer cancelled the transfer.
        public static let cancelled = Kind(base: .cancelled)
        /// The client was shut down.
        public static let shutdown = Kind(base: .shutdown)
        /// A collected body exceeded its limit.
        public static let bodyTooLarge = Kind(base: .bodyTooLarge)
        /// The request could not be set up (e.g. a malformed URL).
        public static let invalidRequest = Kind(base: .invalidRequest)
        /// The kind's name.
        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public var kind: Kind
    /// A human-readable explanation (libcurl's error buffer where available).
    public var message: String
    /// The libcurl result code, if the failure came from libcurl.
    public var curlCode: Int?

    /// Creates an error.
    public init(kind: Kind, message: String, curlCode: Int? = nil) {
        self.kind = kind
        self.message = message
        self.curlCode = curlCode
    }

    /// A short description that includes the kind and libcurl's message.
    public var description: String { "HTTPClientError.\(kind): \(message)" }
}
