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

/// One turn of the conversation.
public struct MessageParam: Sendable, Hashable {
    /// Who spoke.
    public enum Role: String, Sendable, Hashable {
        case user, assistant
    }

    /// Who spoke.
    public var role: Role
    /// The turn's text blocks.
    public var content: [TextBlock]

    /// Creates a turn from blocks.
    public init(role: Role, content: [TextBlock]) {
        self.role = role
        self.content = content
    }

    /// Creates a turn with one text block.
    public init(role: Role, text: String) {
        self.init(role: role, content: [TextBlock(text)])
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
            let blocks = message.content.filter { !$0.text.isEmpty }
            if blocks.isEmpty { continue }
            if let last = merged.last, last.role == message.role {
                merged[merged.count - 1].content += blocks
            } else {
                merged.append(MessageParam(role: message.role, content: blocks))
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
        json.key("messages"); json.beginArray()
        for message in messages {
            json.beginObject()
            json.key("role"); json.string(message.role.rawValue)
            json.key("content"); json.beginArray()
            for block in message.content { json.textBlock(block) }
            json.endArray()
            json.endObject()
        }
        json.endArray()
        if let temperature {
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

    private mutating func separator() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }
}
