import Foundation

extension StubRequest {
    /// Parses the JSON body leniently (anything missing stays empty).
    init(headers: [(name: String, value: String)], body: [UInt8]) {
        self.headers = headers
        self.body = body
        let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        model = json["model"] as? String
        stream = json["stream"] as? Bool ?? false
        var cache = false
        func text(of content: Any?) -> String {
            if let s = content as? String { return s }
            guard let blocks = content as? [[String: Any]] else { return "" }
            var parts: [String] = []
            for block in blocks {
                if block["cache_control"] != nil { cache = true }
                if let t = block["text"] as? String { parts.append(t) }
            }
            return parts.joined(separator: "\n")
        }
        func blocks(of content: Any?) -> [Block] {
            if let s = content as? String { return [Block(type: "text", text: s)] }
            return (content as? [[String: Any]] ?? []).map { raw in
                var block = Block(type: raw["type"] as? String ?? "")
                block.text = raw["text"] as? String
                block.id = raw["id"] as? String
                block.name = raw["name"] as? String
                if let input = raw["input"],
                    let data = try? JSONSerialization.data(
                        withJSONObject: input, options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed])
                {
                    block.input = String(decoding: data, as: UTF8.self)
                }
                block.toolUseID = raw["tool_use_id"] as? String
                if raw["type"] as? String == "tool_result" {
                    let inner = raw["content"]
                    block.content = inner as? String ?? (inner as? [[String: Any]])?.compactMap { $0["text"] as? String }
                        .joined(separator: "\n")
                }
                block.isError = raw["is_error"] as? Bool ?? false
                block.thinking = raw["thinking"] as? String
                block.signature = raw["signature"] as? String
                block.data = raw["data"] as? String
                return block
            }
        }
        system = text(of: json["system"])
        messages = (json["messages"] as? [[String: Any]] ?? []).map {
            Message(
                role: $0["role"] as? String ?? "", text: text(of: $0["content"]), blocks: blocks(of: $0["content"]))
        }
        hasCacheControl = cache
        rawMessages = RawJSON.messageElements(body)
        toolNames = (json["tools"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        thinkingBudget = (json["thinking"] as? [String: Any])?["budget_tokens"] as? Int
    }

    /// Rough token count: words of the system prompt and all messages.
    var inputWordCount: Int {
        ([system] + messages.map(\.text)).reduce(0) { $0 + $1.split(whereSeparator: { $0 == " " || $0 == "\n" }).count }
    }
}
