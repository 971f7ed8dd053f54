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
    /// `content_block_start` of a block other than `tool_use` and `redacted_thinking`, with its type (`text`,
    /// `thinking`, …).
    case contentBlockStart(index: Int, type: String)
    /// `content_block_start` of a `tool_use` block.
    case toolUseStart(index: Int, id: String, name: String)
    /// `content_block_start` of a `redacted_thinking` block (complete in its start event).
    case redactedThinking(index: Int, data: String)
    /// A `text_delta`.
    case textDelta(index: Int, text: String)
    /// An `input_json_delta`: a fragment of a tool call's input JSON text (fragments split anywhere).
    case inputJSONDelta(index: Int, partialJSON: String)
    /// A `thinking_delta`.
    case thinkingDelta(index: Int, thinking: String)
    /// A `signature_delta` (the thinking block's signature).
    case signatureDelta(index: Int, signature: String)
    /// Any other delta (`citations_delta`, unknown), by its delta type.
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

/// A tool call of a finished step, with its input as parsed (or why it could not be).
public struct ToolCall: Sendable, Hashable {
    /// The `tool_use` block as it is stored and sent back (an unparsable input becomes `{}`).
    public var block: ToolUseBlock
    /// The input text as Claude streamed it.
    public var inputText: String
    /// Why the input is not a JSON object, if it is not.
    public var inputError: String?
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
    /// The blocks in the order they opened, each under its stream index. A delta nearly always goes to the last one,
    /// which is looked at first; every delta is appended in place (amortized O(1), never a copy of the block).
    private var blocks: [(index: Int, partial: Partial)] = []
    private var hasTextBlock = false

    private enum Partial: Sendable {
        case text(String)
        case thinking(String, signature: String)
        case redactedThinking(String)
        case toolUse(id: String, name: String, input: String)
        /// Held for the moment a payload is being appended to, so the payload stays uniquely referenced.
        case moving

        /// Appends to the text of a text block; `false` (and no change) if the block is of another kind. Like the
        /// others below, it moves the payload out first, so the append happens in place.
        mutating func append(text delta: String) -> Bool {
            guard case .text(var t) = self else { return false }
            self = .moving
            t += delta
            self = .text(t)
            return true
        }

        mutating func append(thinking delta: String) {
            guard case .thinking(var t, let signature) = self else { return }
            self = .moving
            t += delta
            self = .thinking(t, signature: signature)
        }

        mutating func append(signature delta: String) {
            guard case .thinking(let t, var signature) = self else { return }
            self = .moving
            signature += delta
            self = .thinking(t, signature: signature)
        }

        mutating func append(input fragment: String) {
            guard case .toolUse(let id, let name, var input) = self else { return }
            self = .moving
            input += fragment
            self = .toolUse(id: id, name: name, input: input)
        }
    }

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
            if type == "text" {
                hasTextBlock = true
                open(index, .text(""))
            } else if type == "thinking" {
                open(index, .thinking("", signature: ""))
            }
        case .toolUseStart(let index, let id, let name):
            open(index, .toolUse(id: id, name: name, input: ""))
        case .redactedThinking(let index, let data):
            open(index, .redactedThinking(data))
        case .textDelta(let index, let delta):
            if let position = position(of: index) {
                // A text delta counts only for a text block (or before any text block opened: see below).
                if blocks[position].partial.append(text: delta) {
                    text += delta
                } else if !hasTextBlock {
                    text += delta
                }
            } else if !hasTextBlock {
                // A delta for a block that never started: taken as text (lenient, as the API never does this).
                text += delta
                hasTextBlock = true
                open(index, .text(delta))
            }
        case .inputJSONDelta(let index, let fragment):
            if let position = position(of: index) { blocks[position].partial.append(input: fragment) }
        case .thinkingDelta(let index, let delta):
            if let position = position(of: index) { blocks[position].partial.append(thinking: delta) }
        case .signatureDelta(let index, let delta):
            if let position = position(of: index) { blocks[position].partial.append(signature: delta) }
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

    /// Where the block with stream index `index` is in `blocks`: the last one in the usual case.
    private func position(of index: Int) -> Int? {
        if let last = blocks.indices.last, blocks[last].index == index { return last }
        return blocks.lastIndex { $0.index == index }
    }

    private mutating func open(_ index: Int, _ block: Partial) {
        if let position = position(of: index) {
            blocks[position].partial = block
        } else {
            blocks.append((index, block))
        }
    }

    /// The reply's blocks in order, as they are stored and sent back: text, thinking (with its signature),
    /// redacted thinking and tool calls (inputs in canonical form; one that is not a JSON object becomes `{}`).
    /// Empty text blocks are left out.
    public var contentBlocks: [ContentBlock] {
        blocks.compactMap { block -> ContentBlock? in
            switch block.partial {
            case .text(let t): return t.isEmpty ? nil : .text(TextBlock(t))
            case .thinking(let t, let signature): return .thinking(ThinkingBlock(thinking: t, signature: signature))
            case .redactedThinking(let data): return .redactedThinking(data: data)
            case .toolUse(let id, let name, let input):
                return .toolUse(ToolUseBlock(id: id, name: name, input: Self.parseInput(input).value))
            case .moving: return nil
            }
        }
    }

    /// The tool calls of the reply, in order.
    public var toolCalls: [ToolCall] {
        blocks.compactMap { block -> ToolCall? in
            guard case .toolUse(let id, let name, let input) = block.partial else { return nil }
            let parsed = Self.parseInput(input)
            return ToolCall(
                block: ToolUseBlock(id: id, name: name, input: parsed.value), inputText: input, inputError: parsed.error)
        }
    }

    /// The thinking text of the reply so far (all thinking blocks).
    public var thinkingText: String {
        blocks.compactMap { block -> String? in
            if case .thinking(let t, _) = block.partial { return t }
            return nil
        }.joined()
    }

    private static func parseInput(_ text: String) -> (value: JSONValue, error: String?) {
        // The API sends no fragment at all for a tool without input.
        if text.allSatisfy({ $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }) { return (.object([:]), nil) }
        do {
            let value = try JSONValue(parsing: text)
            guard case .object = value else { return (.object([:]), "the tool input is not a JSON object") }
            return (value, nil)
        } catch {
            return (.object([:]), "the tool input is not valid JSON (\(error.message))")
        }
    }
}
