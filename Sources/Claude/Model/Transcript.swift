/// Messages as JSON text in the Messages API's own shape (`[{"role": …, "content": [blocks]}, …]`): how a turn's full
/// content (every step's text, tool calls, tool results and signed thinking) is stored and read back.
///
/// Writing is deterministic (fixed key order, tool inputs in ``JSONValue/canonicalText``), and reading gives back the
/// same values whatever spacing or key order the store returns, so a request rebuilt from stored content has the same
/// bytes as the request that carried it first: prompt caching holds across tool turns.
public enum Transcript {
    /// The JSON text of `messages`.
    public static func encode(_ messages: [MessageParam]) -> String {
        var json = JSONWriter()
        json.beginArray()
        for message in messages {
            json.beginObject()
            json.key("role"); json.string(message.role.rawValue)
            json.key("content"); json.beginArray()
            for block in message.blocks { json.block(block) }
            json.endArray()
            json.endObject()
        }
        json.endArray()
        return String(decoding: json.bytes, as: UTF8.self)
    }

    /// Messages from JSON text written by ``encode(_:)`` (or any equivalent JSON); unknown block types are skipped.
    public static func decode(_ text: String) throws(JSONValueError) -> [MessageParam] {
        guard case .array(let items) = try JSONValue(parsing: text) else {
            throw JSONValueError(message: "stored content is not an array of messages")
        }
        var messages: [MessageParam] = []
        for item in items {
            guard let object = item.objectValue, let role = object["role"]?.stringValue.flatMap(MessageParam.Role.init),
                case .array(let rawBlocks)? = object["content"]
            else { throw JSONValueError(message: "stored content has a message without role and content") }
            messages.append(MessageParam(role: role, blocks: rawBlocks.compactMap(block)))
        }
        return messages
    }

    private static func block(_ value: JSONValue) -> ContentBlock? {
        guard let object = value.objectValue, let type = object["type"]?.stringValue else { return nil }
        func string(_ key: String) -> String? { object[key]?.stringValue }
        switch type {
        case "text":
            return string("text").map { .text(TextBlock($0)) }
        case "tool_use":
            guard let id = string("id"), let name = string("name") else { return nil }
            return .toolUse(ToolUseBlock(id: id, name: name, input: object["input"] ?? .object([:])))
        case "tool_result":
            guard let id = string("tool_use_id") else { return nil }
            var isError = false
            if case .bool(let flag)? = object["is_error"] { isError = flag }
            return .toolResult(ToolResultBlock(toolUseID: id, content: string("content") ?? "", isError: isError))
        case "thinking":
            guard let thinking = string("thinking"), let signature = string("signature") else { return nil }
            return .thinking(ThinkingBlock(thinking: thinking, signature: signature))
        case "redacted_thinking":
            return string("data").map { .redactedThinking(data: $0) }
        default:
            return nil
        }
    }
}
