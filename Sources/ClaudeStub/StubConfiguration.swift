/// Default pacing and formatting of the stub's replies (scenarios may override per request).
public struct StubConfiguration: Sendable {
    /// Delay before the first text delta.
    public var firstDeltaDelay: Duration
    /// Delay between text deltas.
    public var deltaInterval: Duration
    /// Number of text deltas; `nil` sends one delta per word of the reply. When set, the reply's words are
    /// cycled (or merged) to give exactly this many deltas.
    public var deltaCount: Int?
    /// Send a `ping` event after every N deltas (one ping after `content_block_start` when 0); `nil` for none.
    public var pingEvery: Int?
    /// Pad JSON payloads with runs of spaces before their final `}` as the real API does.
    public var padJSON: Bool
    /// Start each text delta with `[ts:<CLOCK_MONOTONIC ns>]`, taken just before it is written, and the first one
    /// also with `[rx:<ns>]`, the request's arrival (for benchmarks: the stub's own time to first delta).
    public var embedTimestamps: Bool
    /// Model name reported when the request names none.
    public var defaultModel: String
    /// Whether `[[stub:…]]` directives in the last user message select scenarios (tests). The service's offline stub
    /// turns them off unless `OFFLINE_STUB_DIRECTIVES=true`, so users cannot steer it. Directives are bounded either
    /// way (`StubDirective.maximumDeltas`, `.maximumDelay`).
    public var honorsDirectives: Bool

    /// Creates a configuration.
    public init(
        firstDeltaDelay: Duration = .zero,
        deltaInterval: Duration = .zero,
        deltaCount: Int? = nil,
        pingEvery: Int? = nil,
        padJSON: Bool = false,
        embedTimestamps: Bool = false,
        defaultModel: String = "claude-stub-1",
        honorsDirectives: Bool = true
    ) {
        self.honorsDirectives = honorsDirectives
        self.firstDeltaDelay = firstDeltaDelay
        self.deltaInterval = deltaInterval
        self.deltaCount = deltaCount
        self.pingEvery = pingEvery
        self.padJSON = padJSON
        self.embedTimestamps = embedTimestamps
        self.defaultModel = defaultModel
    }
}

/// A request the stub received.
public struct StubRequest: Sendable {
    /// One message of the request: role and its text blocks joined.
    public struct Message: Sendable, Hashable {
        /// `user` or `assistant`.
        public var role: String
        /// The text of all text blocks, joined.
        public var text: String
    }

    /// The request's header fields as received (names lowercased).
    public var headers: [(name: String, value: String)]
    /// The raw body.
    public var body: [UInt8]
    /// `model` from the body.
    public var model: String?
    /// The system prompt text (string form or all text blocks joined).
    public var system: String
    /// The messages.
    public var messages: [Message]
    /// `stream` from the body.
    public var stream: Bool
    /// Whether any block carried `cache_control`.
    public var hasCacheControl: Bool

    /// The first value of a header (case-insensitive).
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }
}
