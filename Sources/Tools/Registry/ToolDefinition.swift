public import Foundation

/// A tool as offered to Claude (an entry of the Messages API's `tools` array).
public struct ToolDefinition: Sendable, Hashable {
    /// Unique across the registry and valid for Claude (`^[a-zA-Z0-9_-]{1,64}$`): `<server>__<tool>` for MCP tools.
    public var name: String
    public var description: String
    /// The JSON Schema of the input, as JSON text with sorted keys (byte-stable, so the prompt cache holds).
    public var inputSchema: String

    public init(name: String, description: String, inputSchema: String) {
        self.name = name
        self.description = description
        self.inputSchema = inputSchema
    }

    /// The definition as a Messages API `tools` entry: `{"name", "description", "input_schema"}`, keys in that order.
    public var messagesAPIJSON: String {
        "{\"name\":\(JSONText.quoted(name)),\"description\":\(JSONText.quoted(description)),\"input_schema\":\(inputSchema)}"
    }
}

/// What a tool call gave: the text for the `tool_result` block, and whether it is an error (`is_error`).
public struct ToolOutcome: Sendable, Hashable {
    public var text: String
    public var isError: Bool

    public init(text: String, isError: Bool) {
        self.text = text
        self.isError = isError
    }

    static func error(_ text: String) -> ToolOutcome { ToolOutcome(text: text, isError: true) }
}

/// Who asks for a tool call: the verified user and the thread of the turn.
public struct ToolCallContext: Sendable, Hashable {
    public var userID: UUID
    public var threadID: String?

    public init(userID: UUID, threadID: String? = nil) {
        self.userID = userID
        self.threadID = threadID
    }
}

/// A tool that runs inside the service (no MCP server), such as `search_memory`.
///
/// Calls carry the verified user, so a built-in tool can scope what it reads to that user.
public protocol BuiltinTool: Sendable {
    /// Its definition; `name` must match `^[a-zA-Z0-9_-]{1,64}$` and not contain `__` (reserved for MCP tools).
    var definition: ToolDefinition { get }
    /// Runs the tool. `input` is a JSON object (the registry has checked). Failures are outcomes, not throws.
    func call(input: String, context: ToolCallContext) async -> ToolOutcome
}

enum ToolNames {
    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// Whether Claude accepts `name` as a tool name.
    static func isValidForClaude(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy(isNameByte)
    }

    static func qualified(server: String, tool: String) -> String { "\(server)__\(tool)" }
}

enum JSONText {
    static func quoted(_ string: String) -> String {
        let data = try? JSONSerialization.data(withJSONObject: string, options: [.fragmentsAllowed])
        return data.flatMap { String(data: $0, encoding: .utf8) } ?? "\"\""
    }

    /// `value` (a JSONSerialization object) as compact JSON with sorted keys.
    static func encode(_ value: Any) -> String? {
        guard JSONSerialization.isValidJSONObject(value) || value is String || value is NSNumber,
            let data = try? JSONSerialization.data(
                withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes])
        else { return nil }
        return String(data: data, encoding: .utf8)
    }
}
