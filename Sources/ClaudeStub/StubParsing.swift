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
        system = text(of: json["system"])
        messages = (json["messages"] as? [[String: Any]] ?? []).map {
            Message(role: $0["role"] as? String ?? "", text: text(of: $0["content"]))
        }
        hasCacheControl = cache
    }

    /// Rough token count: words of the system prompt and all messages.
    var inputWordCount: Int {
        ([system] + messages.map(\.text)).reduce(0) { $0 + $1.split(whereSeparator: { $0 == " " || $0 == "\n" }).count }
    }
}
