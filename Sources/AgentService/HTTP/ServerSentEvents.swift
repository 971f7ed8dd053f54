import Foundation
import NIOCore
import ThreadStore

/// Encodes turn events as the seed-compatible SSE frames: `data: {"chunk": ...}`, `data: {"done": true, ...}`,
/// `data: {"error": {...}}`, and `: ping` comments.
///
/// Every chunk frame carries `id: <turn_id>:<offset>`, the reply's UTF-8 length after the chunk: a client that loses
/// the connection sends the last id it saw as `Last-Event-ID` (or `?after=`) to `GET /threads/{id}/stream` and gets
/// exactly the rest.
///
/// Hand-rolled on purpose: these frames are written once per token for every stream, and a direct escaper is several
/// times cheaper than `JSONEncoder` on that path. The escaping is JSON's own (RFC 8259) plus U+2028/U+2029.
enum ServerSentEvents {
    static let ping = ByteBuffer(string: ": ping\n\n")

    /// The frame for one event; `nil` for events that have no frame.
    static func frame(for event: TurnEvent, threadID: String, turnID: UUID, turnKey: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        switch event {
        case .ping:
            return ping
        case .chunk(let text, let end):
            buffer.reserveCapacity(text.utf8.count + turnKey.utf8.count + 40)
            buffer.writeStaticString("id: ")
            buffer.writeString(turnKey)
            buffer.writeInteger(UInt8(ascii: ":"))
            buffer.writeString(String(end))
            buffer.writeStaticString("\ndata: {\"chunk\":")
            writeJSONString(text, into: &buffer)
            buffer.writeStaticString("}\n\n")
        case .done(let outcome):
            buffer.writeStaticString("data: ")
            buffer.writeString(doneJSON(outcome))
            buffer.writeStaticString("\n\n")
        case .failed(let failure):
            buffer.writeStaticString("data: ")
            buffer.writeString(errorJSON(failure, threadID: threadID, turnID: turnID))
            buffer.writeStaticString("\n\n")
        case .activity(let activity):
            buffer.writeStaticString("data: ")
            buffer.writeString(activityJSON(activity))
            buffer.writeStaticString("\n\n")
        }
        return buffer
    }

    /// `{"tool_call": {"id", "name", "input"}}`, `{"tool_result": {"id", "name", "is_error", "summary"}}` or
    /// `{"thinking": "..."}`: events a seed-format client ignores (it reads only `chunk`, `done` and `error`).
    static func activityJSON(_ activity: TurnActivity) -> String {
        switch activity {
        case .toolCall(let id, let name, let input):
            return "{\"tool_call\":{\"id\":\(quoted(id)),\"name\":\(quoted(name)),\"input\":\(input)}}"
        case .toolResult(let id, let name, let isError, let summary):
            return "{\"tool_result\":{\"id\":\(quoted(id)),\"name\":\(quoted(name)),\"is_error\":\(isError),"
                + "\"summary\":\(quoted(summary))}}"
        case .thinking(let text):
            return "{\"thinking\":\(quoted(text))}"
        }
    }

    static func doneJSON(_ outcome: TurnOutcome) -> String {
        var fields = [
            "\"done\":true",
            "\"thread_id\":\(quoted(outcome.threadID))",
            "\"turn_id\":\(quoted(outcome.turnID.uuidString.lowercased()))",
            "\"usage\":\(usageJSON(outcome.usage))",
        ]
        if let stop = outcome.stopReason { fields.append("\"stop_reason\":\(quoted(stop))") }
        if let model = outcome.model { fields.append("\"model\":\(quoted(model))") }
        if let ms = outcome.firstTokenMs { fields.append("\"first_token_ms\":\(ms)") }
        if outcome.replayed { fields.append("\"replayed\":true") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func errorJSON(_ failure: TurnFailureInfo, threadID: String, turnID: UUID) -> String {
        "{\"error\":{\"type\":\(quoted(failure.type)),\"message\":\(quoted(failure.message)),"
            + "\"retryable\":\(failure.retryable)},\"thread_id\":\(quoted(threadID)),"
            + "\"turn_id\":\(quoted(turnID.uuidString.lowercased()))}"
    }

    static func usageJSON(_ usage: TokenUsage) -> String {
        "{\"input_tokens\":\(usage.inputTokens),\"output_tokens\":\(usage.outputTokens),"
            + "\"cache_creation_input_tokens\":\(usage.cacheCreationInputTokens),"
            + "\"cache_read_input_tokens\":\(usage.cacheReadInputTokens)}"
    }

    static func quoted(_ text: String) -> String {
        var buffer = ByteBuffer()
        writeJSONString(text, into: &buffer)
        return String(buffer: buffer)
    }

    /// Writes `text` as a JSON string literal (with quotes).
    static func writeJSONString(_ text: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var utf8 = text.utf8.makeIterator()
        var pending: [UInt8] = []
        while let byte = utf8.next() {
            switch byte {
            case UInt8(ascii: "\""): pending.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): pending.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: pending.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: pending.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: pending.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x00..<0x20:
                pending.append(contentsOf: [
                    0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)],
                ])
            case 0xE2:
                // U+2028 / U+2029 (E2 80 A8 / E2 80 A9) are legal JSON but break JavaScript line parsing.
                guard let second = utf8.next() else {
                    pending.append(byte)
                    break
                }
                guard let third = utf8.next() else {
                    pending.append(contentsOf: [byte, second])
                    break
                }
                if second == 0x80 && (third == 0xA8 || third == 0xA9) {
                    pending.append(
                        contentsOf: Array("\\u202".utf8) + [third == 0xA8 ? UInt8(ascii: "8") : UInt8(ascii: "9")])
                } else {
                    pending.append(contentsOf: [byte, second, third])
                }
            default:
                pending.append(byte)
            }
            if pending.count >= 512 {
                buffer.writeBytes(pending)
                pending.removeAll(keepingCapacity: true)
            }
        }
        buffer.writeBytes(pending)
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
