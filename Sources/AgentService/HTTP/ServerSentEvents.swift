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
            writeDecimal(end, into: &buffer)
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

    /// Writes `text` as a JSON string literal (with quotes): runs that need no escape are copied as they are, straight
    /// into the buffer (a typical delta is one such run).
    static func writeJSONString(_ text: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { bytes in
            var runStart = 0
            var i = 0
            let n = bytes.count
            while i < n {
                let byte = bytes[i]
                let escape: StaticString  // empty: \u00XX
                var width = 1
                switch byte {
                case UInt8(ascii: "\""): escape = "\\\""
                case UInt8(ascii: "\\"): escape = "\\\\"
                case 0x0A: escape = "\\n"
                case 0x0D: escape = "\\r"
                case 0x09: escape = "\\t"
                case 0x00..<0x20: escape = ""
                case 0xE2 where i + 2 < n && bytes[i + 1] == 0x80 && (bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9):
                    // U+2028 / U+2029 (E2 80 A8 / E2 80 A9) are legal JSON but break JavaScript line parsing.
                    escape = bytes[i + 2] == 0xA8 ? "\\u2028" : "\\u2029"
                    width = 3
                default:
                    i += 1
                    continue
                }
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[runStart..<i]))
                if escape.utf8CodeUnitCount > 0 {
                    buffer.writeStaticString(escape)
                } else {
                    buffer.writeStaticString("\\u00")
                    buffer.writeInteger(hexDigit(byte >> 4))
                    buffer.writeInteger(hexDigit(byte & 0xF))
                }
                i += width
                runStart = i
            }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[runStart..<n]))
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? 0x30 + value : 0x61 + value - 10
    }

    /// Writes a non-negative integer in decimal, without building a string.
    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        var value = UInt(max(0, value))
        var count = 1
        var rest = value / 10
        while rest > 0 {
            count += 1
            rest /= 10
        }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { digits in
            var index = count
            repeat {
                index -= 1
                digits[index] = 0x30 + UInt8(value % 10)
                value /= 10
            } while index > 0
            return count
        }
    }
}
