/// Token counts of a message.
public struct Usage: Sendable, Hashable {
    /// Input tokens after the last cache breakpoint (neither read from nor written to the cache).
    public var inputTokens: Int
    /// Output tokens generated.
    public var outputTokens: Int
    /// Input tokens written to the prompt cache.
    public var cacheCreationInputTokens: Int
    /// Input tokens read from the prompt cache.
    public var cacheReadInputTokens: Int

    /// Creates usage counts.
    public init(
        inputTokens: Int = 0, outputTokens: Int = 0, cacheCreationInputTokens: Int = 0, cacheReadInputTokens: Int = 0
    ) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.cacheCreationInputTokens = cacheCreationInputTokens
        self.cacheReadInputTokens = cacheReadInputTokens
    }
}

/// The head of a streamed message (`message_start`).
public struct MessageStart: Sendable, Hashable {
    /// The message id (`msg_…`).
    public var id: String
    /// The model that answers.
    public var model: String
    /// Input-side usage (output is a placeholder until `message_delta`).
    public var usage: Usage
    /// The `request-id` response header.
    public var requestID: String?
    /// The HTTP attempt that produced this stream (1 = no retry).
    public var attempts: Int

    /// Creates a message head.
    public init(id: String, model: String, usage: Usage, requestID: String?, attempts: Int) {
        self.id = id
        self.model = model
        self.usage = usage
        self.requestID = requestID
        self.attempts = attempts
    }
}

/// A typed event of a streamed reply.
public enum MessageStreamEvent: Sendable, Hashable {
    /// `message_start`.
    case messageStart(MessageStart)
    /// `content_block_start` with the block's type (`text`, `thinking`, `tool_use`, …).
    case contentBlockStart(index: Int, type: String)
    /// A `text_delta`.
    case textDelta(index: Int, text: String)
    /// Any other delta (`thinking_delta`, `input_json_delta`, `signature_delta`, `citations_delta`, unknown),
    /// by its delta type.
    case otherDelta(index: Int, type: String)
    /// `content_block_stop`.
    case contentBlockStop(index: Int)
    /// `message_delta`. `usage` is the cumulative snapshot: `message_start` counts overwritten by the fields the
    /// delta carried (never added).
    case messageDelta(stopReason: String?, stopSequence: String?, usage: Usage)
    /// `message_stop`: the reply is complete.
    case messageStop
    /// `ping`.
    case ping
}

/// A complete (non-streamed) reply from ``ClaudeClient/create(_:)``.
public struct Message: Sendable, Hashable {
    /// The message id.
    public var id: String
    /// The model that answered.
    public var model: String
    /// The concatenated text of all text blocks.
    public var text: String
    /// The types of the content blocks, in order.
    public var contentTypes: [String]
    /// Why generation stopped (`end_turn`, `max_tokens`, `stop_sequence`, `refusal`, …).
    public var stopReason: String?
    /// The stop sequence hit, if `stopReason == "stop_sequence"`.
    public var stopSequence: String?
    /// Token counts.
    public var usage: Usage
    /// The `request-id` response header.
    public var requestID: String?
    /// How many HTTP attempts were made.
    public var attempts: Int
}

/// Accumulates a streamed reply; the service feeds it every event it relays.
public struct MessageAccumulator: Sendable {
    /// The text of all text blocks, in order.
    public private(set) var text = ""
    /// The latest cumulative usage.
    public private(set) var usage = Usage()
    /// The stop reason from `message_delta`.
    public private(set) var stopReason: String?
    /// The stop sequence from `message_delta`.
    public private(set) var stopSequence: String?
    /// The model from `message_start`.
    public private(set) var model: String?
    /// The message id from `message_start`.
    public private(set) var messageID: String?
    /// The request id from `message_start`.
    public private(set) var requestID: String?
    /// Whether `message_stop` arrived: only then is the reply complete.
    public private(set) var sawMessageStop = false
    private var textBlocks: Set<Int> = []

    /// Creates an empty accumulator.
    public init() {}

    /// Applies one event.
    public mutating func apply(_ event: MessageStreamEvent) {
        switch event {
        case .messageStart(let start):
            model = start.model
            messageID = start.id
            requestID = start.requestID
            usage = start.usage
        case .contentBlockStart(let index, let type):
            if type == "text" { textBlocks.insert(index) }
        case .textDelta(let index, let delta):
            if textBlocks.contains(index) || textBlocks.isEmpty { text += delta }
        case .messageDelta(let reason, let sequence, let newUsage):
            stopReason = reason
            stopSequence = sequence
            usage = newUsage
        case .messageStop:
            sawMessageStop = true
        case .otherDelta, .contentBlockStop, .ping:
            break
        }
    }
}
