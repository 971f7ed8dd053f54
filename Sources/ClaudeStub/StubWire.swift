import Foundation

/// Builds the bytes of the Messages API wire format: SSE frames and JSON bodies.
struct StubWire {
    var lineEnding: StubScenario.LineEnding
    var padJSON: Bool
    var comments: Bool

    /// One SSE frame: optional comment, `event:` and `data:` lines, blank line.
    func frame(_ event: String, _ json: String) -> [UInt8] {
        let le: String
        switch lineEnding {
        case .lf: le = "\n"
        case .crlf: le = "\r\n"
        case .cr: le = "\r"
        }
        var payload = json
        if padJSON, payload.hasSuffix("}") {
            payload.removeLast()
            payload += String(repeating: " ", count: Int.random(in: 1...8)) + "}"
        }
        var text = ""
        if comments { text += ": stub comment" + le }
        text += "event: " + event + le + "data: " + payload + le + le
        return Array(text.utf8)
    }

    static func string(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func usage(input: Int, output: Int, cacheCreation: Int, cacheRead: Int) -> String {
        "{\"input_tokens\":\(input),\"cache_creation_input_tokens\":\(cacheCreation),\"cache_read_input_tokens\":\(cacheRead),"
            + "\"cache_creation\":{\"ephemeral_5m_input_tokens\":\(cacheCreation),\"ephemeral_1h_input_tokens\":0},"
            + "\"output_tokens\":\(output),\"service_tier\":\"standard\"}"
    }

    static func messageStart(id: String, model: String, usage: String) -> String {
        "{\"type\":\"message_start\",\"message\":{\"id\":\(string(id)),\"type\":\"message\",\"role\":\"assistant\",\"model\":\(string(model)),"
            + "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":\(usage)}}"
    }

    static func blockStart(_ index: Int, _ block: String) -> String {
        "{\"type\":\"content_block_start\",\"index\":\(index),\"content_block\":\(block)}"
    }

    static func delta(_ index: Int, _ delta: String) -> String {
        "{\"type\":\"content_block_delta\",\"index\":\(index),\"delta\":\(delta)}"
    }

    static func textDelta(_ index: Int, _ text: String) -> String {
        delta(index, "{\"type\":\"text_delta\",\"text\":\(string(text))}")
    }

    /// A whole block as it appears in a non-streamed message (tool input that is not valid JSON becomes `{}`).
    static func block(_ block: StubBlock) -> String {
        switch block {
        case .text(let text):
            return "{\"type\":\"text\",\"text\":\(string(text))}"
        case .toolUse(let id, let name, let input):
            let valid = (try? JSONSerialization.jsonObject(with: Data(input.utf8))) is [String: Any]
            return "{\"type\":\"tool_use\",\"id\":\(string(id)),\"name\":\(string(name)),\"input\":\(valid ? input : "{}")}"
        case .thinking(let text):
            return "{\"type\":\"thinking\",\"thinking\":\(string(text)),\"signature\":\(string(StubSignature.sign(text)))}"
        case .redactedThinking(let data):
            return "{\"type\":\"redacted_thinking\",\"data\":\(string(data))}"
        }
    }

    /// `input_json_delta` fragments of the input: first an empty one (as the API sends), then pieces of 1 to 5
    /// characters, cycling.
    static func inputFragments(_ input: String) -> [String] {
        var fragments = [""]
        var rest = Substring(input)
        var size = 1
        while !rest.isEmpty {
            fragments.append(String(rest.prefix(size)))
            rest = rest.dropFirst(size)
            size = size % 5 + 1
        }
        return fragments
    }

    static func blockStop(_ index: Int) -> String { "{\"type\":\"content_block_stop\",\"index\":\(index)}" }

    static func messageDelta(stopReason: String, stopSequence: String?, usage: String) -> String {
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\(string(stopReason)),\"stop_sequence\":\(stopSequence.map(string) ?? "null")},\"usage\":\(usage)}"
    }

    static let messageStop = "{\"type\":\"message_stop\"}"
    static let ping = "{\"type\": \"ping\"}"

    static func error(type: String, message: String, requestID: String?, errorCode: String? = nil) -> String {
        let details = errorCode.map { ",\"details\":{\"error_code\":\(string($0))}" } ?? ""
        let rid = requestID.map { ",\"request_id\":\(string($0))" } ?? ""
        return
            "{\"type\":\"error\",\"error\":{\"type\":\(string(type)),\"message\":\(string(message))\(details)}\(rid)}"
    }

    /// Splits text into words, each carrying the whitespace before it, so the pieces concatenate to the text.
    static func words(_ text: String) -> [String] {
        var words: [String] = []
        var current = ""
        var sawNonSpace = false
        for ch in text {
            if ch == " " && sawNonSpace {
                words.append(current)
                current = ""
                sawNonSpace = false
            }
            current.append(ch)
            if ch != " " { sawNonSpace = true }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// Exactly `count` pieces: merges the tail when there are more words, cycles them when fewer.
    static func pieces(_ text: String, count: Int?) -> [String] {
        let all = words(text)
        guard let count, count > 0 else { return all }
        guard !all.isEmpty else { return Array(repeating: "x", count: count) }
        if all.count >= count {
            return Array(all[0..<(count - 1)]) + [all[(count - 1)...].joined()]
        }
        return (0..<count).map { all[$0 % all.count] }
    }
}
