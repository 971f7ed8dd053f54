/// A prompt-cache breakpoint on a content block.
public struct CacheControl: Sendable, Hashable {
    /// Optional time to live: `"5m"` or `"1h"`; `nil` uses the API default (5 minutes).
    public var ttl: String?

    /// An ephemeral breakpoint with the default TTL.
    public static let ephemeral = CacheControl(ttl: nil)

    /// An ephemeral breakpoint with an explicit TTL (`"5m"` or `"1h"`).
    public static func ephemeral(ttl: String) -> CacheControl { CacheControl(ttl: ttl) }
}

/// A text content block.
public struct TextBlock: Sendable, Hashable {
    /// The text.
    public var text: String
    /// A cache breakpoint on this block, if any.
    public var cacheControl: CacheControl?

    /// Creates a text block.
    public init(_ text: String, cacheControl: CacheControl? = nil) {
        self.text = text
        self.cacheControl = cacheControl
    }

    /// Creates a text block.
    public init(text: String, cacheControl: CacheControl? = nil) {
        self.init(text, cacheControl: cacheControl)
    }
}

/// A `tool_use` block: Claude asks for a tool.
public struct ToolUseBlock: Sendable, Hashable {
    /// The call's id (`toolu_…`), which its `tool_result` names.
    public var id: String
    /// The tool's name.
    public var name: String
    /// The input object.
    public var input: JSONValue

    /// Creates a tool call.
    public init(id: String, name: String, input: JSONValue) {
        self.id = id
        self.name = name
        self.input = input
    }
}

/// A `tool_result` block: the answer to one `tool_use` of the previous assistant message.
public struct ToolResultBlock: Sendable, Hashable {
    /// The `tool_use` block's id.
    public var toolUseID: String
    /// The result as text.
    public var content: String
    /// Whether the tool failed (Claude sees the text as an error).
    public var isError: Bool

    /// Creates a tool result.
    public init(toolUseID: String, content: String, isError: Bool = false) {
        self.toolUseID = toolUseID
        self.content = content
        self.isError = isError
    }
}

/// A `thinking` block with the signature that lets it be sent back.
public struct ThinkingBlock: Sendable, Hashable {
    /// The summarized thinking text.
    public var thinking: String
    /// The opaque signature; sent back unchanged.
    public var signature: String

    /// Creates a thinking block.
    public init(thinking: String, signature: String) {
        self.thinking = thinking
        self.signature = signature
    }
}

/// One content block of a message.
public enum ContentBlock: Sendable, Hashable {
    case text(TextBlock)
    case toolUse(ToolUseBlock)
    case toolResult(ToolResultBlock)
    case thinking(ThinkingBlock)
    /// An encrypted thinking block, sent back unchanged.
    case redactedThinking(data: String)

    /// Whether the block carries nothing (an empty text block, which the API rejects).
    var isEmpty: Bool {
        if case .text(let block) = self { return block.text.isEmpty }
        return false
    }
}

/// One turn of the conversation.
public struct MessageParam: Sendable, Hashable {
    /// Who spoke.
    public enum Role: String, Sendable, Hashable {
        case user, assistant
    }

    /// Who spoke.
    public var role: Role
    /// The turn's blocks.
    public var blocks: [ContentBlock]

    /// The text blocks of the turn.
    public var content: [TextBlock] {
        blocks.compactMap {
            if case .text(let block) = $0 { return block }
            return nil
        }
    }

    /// Creates a turn from blocks of any kind.
    public init(role: Role, blocks: [ContentBlock]) {
        self.role = role
        self.blocks = blocks
    }

    /// Creates a turn from text blocks.
    public init(role: Role, content: [TextBlock]) {
        self.init(role: role, blocks: content.map(ContentBlock.text))
    }

    /// Creates a turn with one text block.
    public init(role: Role, text: String) {
        self.init(role: role, content: [TextBlock(text)])
    }
}

/// A tool Claude may call (`tools` of the request).
public struct ToolSpec: Sendable, Hashable {
    public var name: String
    public var description: String
    /// The JSON Schema of the input, as JSON text (written as it is).
    public var inputSchema: String

    /// Creates a tool description.
    public init(name: String, description: String, inputSchema: String) {
        self.name = name
        self.description = description
        self.inputSchema = inputSchema
    }
}

/// A request to `POST /v1/messages`.
public struct MessagesRequest: Sendable, Hashable {
    /// The model name.
    public var model: String
    /// The maximum number of tokens to generate.
    public var maxTokens: Int
    /// System prompt blocks (sent in array form so they can carry cache breakpoints).
    public var system: [TextBlock]
    /// The conversation, oldest first.
    public var messages: [MessageParam]
    /// Sampling temperature (0...1), or `nil` for the API default.
    public var temperature: Double?
    /// Custom stop sequences.
    public var stopSequences: [String]
    /// An opaque end-user id for abuse detection (never a name or e-mail).
    public var metadataUserID: String?
    /// The tools Claude may call, in a stable order (they head the cached prefix).
    public var tools: [ToolSpec] = []
    /// The extended-thinking budget in tokens (at least 1,024, below `maxTokens`); nil leaves thinking off.
    public var thinkingBudget: Int?

    /// Creates a request.
    public init(
        model: String,
        maxTokens: Int,
        system: [TextBlock] = [],
        messages: [MessageParam],
        temperature: Double? = nil,
        stopSequences: [String] = [],
        metadataUserID: String? = nil
    ) {
        self.model = model
        self.maxTokens = maxTokens
        self.system = system
        self.messages = messages
        self.temperature = temperature
        self.stopSequences = stopSequences
        self.metadataUserID = metadataUserID
    }

    /// Returns the request with empty blocks and turns dropped and same-role neighbours merged (their blocks
    /// concatenated).
    ///
    /// - Throws: an `invalidRequest` ``ClaudeError`` if no turn is left, or the first or last turn is not `user`.
    public func normalized() throws(ClaudeError) -> MessagesRequest {
        var merged: [MessageParam] = []
        for message in messages {
            let blocks = message.blocks.filter { !$0.isEmpty }
            if blocks.isEmpty { continue }
            if let last = merged.last, last.role == message.role {
                merged[merged.count - 1].blocks += blocks
            } else {
                merged.append(MessageParam(role: message.role, blocks: blocks))
            }
        }
        guard !merged.isEmpty else {
            throw ClaudeError(
                kind: .invalidRequest, message: "messages: at least one non-empty user message is required")
        }
        guard merged.first?.role == .user else {
            throw ClaudeError(kind: .invalidRequest, message: "messages.0: first message must use the \"user\" role")
        }
        guard merged.last?.role == .user else {
            throw ClaudeError(
                kind: .invalidRequest,
                message: "messages.\(merged.count - 1): the conversation must end with a user message")
        }
        var copy = self
        copy.messages = merged
        copy.system = system.filter { !$0.text.isEmpty }
        return copy
    }

    /// The JSON body, with keys in a fixed order so the cached prefix stays byte-identical.
    func jsonBody(stream: Bool) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("model"); json.string(model)
        json.key("max_tokens"); json.raw(String(maxTokens))
        if !system.isEmpty {
            json.key("system"); json.beginArray()
            for block in system { json.textBlock(block) }
            json.endArray()
        }
        if !tools.isEmpty {
            json.key("tools"); json.beginArray()
            for tool in tools {
                json.beginObject()
                json.key("name"); json.string(tool.name)
                json.key("description"); json.string(tool.description)
                json.key("input_schema"); json.raw(tool.inputSchema)
                json.endObject()
            }
            json.endArray()
        }
        if let thinkingBudget {
            json.key("thinking"); json.beginObject()
            json.key("type"); json.string("enabled")
            json.key("budget_tokens"); json.raw(String(thinkingBudget))
            json.endObject()
        }
        json.key("messages"); json.beginArray()
        for message in messages {
            json.beginObject()
            json.key("role"); json.string(message.role.rawValue)
            json.key("content"); json.beginArray()
            for block in message.blocks { json.block(block) }
            json.endArray()
            json.endObject()
        }
        json.endArray()
        // Extended thinking does not take a temperature (the API allows only its default then).
        if let temperature, thinkingBudget == nil {
            json.key("temperature"); json.raw("\(temperature)")
        }
        if !stopSequences.isEmpty {
            json.key("stop_sequences"); json.beginArray()
            for sequence in stopSequences { json.string(sequence) }
            json.endArray()
        }
        if let metadataUserID {
            json.key("metadata"); json.beginObject()
            json.key("user_id"); json.string(metadataUserID)
            json.endObject()
        }
        json.key("stream"); json.raw(stream ? "true" : "false")
        json.endObject()
        return json.bytes
    }
}

/// A minimal JSON writer (deterministic key order).
struct JSONWriter {
    var bytes: [UInt8] = []
    private var needsComma = false

    mutating func beginObject() {
        separator()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func beginArray() {
        separator()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }

    mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    mutating func key(_ k: String) {
        string(k)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func string(_ s: String) {
        separator()
        bytes.append(UInt8(ascii: "\""))
        for unit in s.utf8 {
            switch unit {
            case UInt8(ascii: "\""): bytes += [0x5C, 0x22]
            case UInt8(ascii: "\\"): bytes += [0x5C, 0x5C]
            case 0x0A: bytes += [0x5C, UInt8(ascii: "n")]
            case 0x0D: bytes += [0x5C, UInt8(ascii: "r")]
            case 0x09: bytes += [0x5C, UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(unit >> 4)], hex[Int(unit & 0xF)]]
            default: bytes.append(unit)
            }
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    mutating func raw(_ s: String) {
        separator()
        bytes += Array(s.utf8)
        needsComma = true
    }

    mutating func textBlock(_ block: TextBlock) {
        beginObject()
        key("type"); string("text")
        key("text"); string(block.text)
        if let cache = block.cacheControl {
            key("cache_control"); beginObject()
            key("type"); string("ephemeral")
            if let ttl = cache.ttl { key("ttl"); string(ttl) }
            endObject()
        }
        endObject()
    }

    /// One content block, keys in a fixed order (the bytes of a replayed block never change).
    mutating func block(_ block: ContentBlock) {
        switch block {
        case .text(let text):
            textBlock(text)
        case .toolUse(let use):
            beginObject()
            key("type"); string("tool_use")
            key("id"); string(use.id)
            key("name"); string(use.name)
            key("input"); value(use.input)
            endObject()
        case .toolResult(let result):
            beginObject()
            key("type"); string("tool_result")
            key("tool_use_id"); string(result.toolUseID)
            key("content"); string(result.content)
            if result.isError { key("is_error"); raw("true") }
            endObject()
        case .thinking(let thinking):
            beginObject()
            key("type"); string("thinking")
            key("thinking"); string(thinking.thinking)
            key("signature"); string(thinking.signature)
            endObject()
        case .redactedThinking(let data):
            beginObject()
            key("type"); string("redacted_thinking")
            key("data"); string(data)
            endObject()
        }
    }

    private mutating func separator() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }
}
