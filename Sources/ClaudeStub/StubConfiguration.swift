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
        /// The content blocks (a string content is one text block).
        public var blocks: [Block] = []
    }

    /// One content block of a message, with the fields of every block type (those a type lacks are `nil`).
    public struct Block: Sendable, Hashable {
        /// `text`, `tool_use`, `tool_result`, `thinking`, `redacted_thinking`, …
        public var type: String
        /// A text block's text.
        public var text: String?
        /// A tool_use block's id.
        public var id: String?
        /// A tool_use block's name.
        public var name: String?
        /// A tool_use block's input, as JSON with sorted keys.
        public var input: String?
        /// A tool_result block's `tool_use_id`.
        public var toolUseID: String?
        /// A tool_result block's content (a string, or its text blocks joined).
        public var content: String?
        /// A tool_result block's `is_error` (false when absent).
        public var isError: Bool = false
        /// A thinking block's text.
        public var thinking: String?
        /// A thinking block's signature.
        public var signature: String?
        /// A redacted_thinking block's data.
        public var data: String?
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
    /// The exact bytes of each element of `messages`, as sent.
    public var rawMessages: [String]
    /// The names of the offered tools.
    public var toolNames: [String]
    /// `thinking.budget_tokens`, when extended thinking is on.
    public var thinkingBudget: Int?

    /// The first value of a header (case-insensitive).
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }
}
