import Foundation

/// Turns an MCP `tools/call` result into the text of a `tool_result` block, within a byte budget.
enum ToolResultText {
    /// The result's text content (joined by newlines; other content kinds named, not inlined), or its
    /// `structuredContent` as JSON when it has no content, cut to `maxBytes`.
    static func outcome(_ result: JSONObject, maxBytes: Int) -> ToolOutcome {
        let isError = (result.value["isError"] as? Bool) ?? false
        var parts: [String] = []
        for item in result.value["content"] as? [[String: Any]] ?? [] {
            switch item["type"] as? String {
            case "text": parts.append(item["text"] as? String ?? "")
            case "resource":
                let resource = item["resource"] as? [String: Any]
                if let text = resource?["text"] as? String {
                    parts.append(text)
                } else {
                    parts.append("[resource \(resource?["uri"] as? String ?? "") omitted]")
                }
            case "resource_link": parts.append("[link: \(item["uri"] as? String ?? "")]")
            case let kind?:
                parts.append("[\(kind) content (\(item["mimeType"] as? String ?? "unknown type")) omitted]")
            case nil: break
            }
        }
        if parts.isEmpty, let structured = result.value["structuredContent"], let json = JSONText.encode(structured) {
            parts.append(json)
        }
        return ToolOutcome(text: truncate(parts.joined(separator: "\n"), maxBytes: maxBytes), isError: isError)
    }

    /// `text` cut to at most `maxBytes` UTF-8 bytes at a character boundary, with a marker saying how much was kept.
    static func truncate(_ text: String, maxBytes: Int) -> String {
        let utf8 = text.utf8
        guard utf8.count > maxBytes else { return text }
        let marker = "\n[output truncated: \(utf8.count) bytes, the first %d shown]"
        let budget = max(0, maxBytes - marker.utf8.count - 8)
        var end = utf8.index(utf8.startIndex, offsetBy: budget)
        // Back off to the start of a scalar (never split a multi-byte character).
        while end > utf8.startIndex, (utf8[end] & 0xC0) == 0x80 { end = utf8.index(before: end) }
        let kept = String(text[..<end])
        return kept + marker.replacingOccurrences(of: "%d", with: "\(kept.utf8.count)")
    }
}
