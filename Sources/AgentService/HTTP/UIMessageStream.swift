import Foundation
import NIOCore

/// The AI SDK's UI Message Stream protocol (v1, header `x-vercel-ai-ui-message-stream: v1`), the second encoding of
/// a turn's events, for `useChat` frontends (`POST /api/chat`, `GET /api/chat/{id}/stream`).
///
/// One turn is one assistant message with one step and one text part:
/// `start` (message id = turn id) → `start-step` → `text-start` → `text-delta`… → `text-end` → `finish-step` →
/// `finish` (or `abort` for a stopped reply, or `error`) → `data: [DONE]`. Only the fields of the `ai` package's
/// strict chunk schemas are sent (`packages/ai/src/ui-message-stream/ui-message-chunks.ts`); ours (thread id, usage,
/// stop reason) travel in `messageMetadata`, which both AI SDK 5 and 6 accept.
enum UIMessageStream {
    static let headerName = "x-vercel-ai-ui-message-stream"
    static let textPartID = "text-1"

    /// `start`, `start-step` and `text-start`, before the first delta.
    static func prelude(threadID: String, turnID: UUID) -> ByteBuffer {
        var buffer = ByteBuffer()
        let turn = turnID.uuidString.lowercased()
        frame(
            "{\"type\":\"start\",\"messageId\":\(ServerSentEvents.quoted(turn)),"
                + "\"messageMetadata\":{\"thread_id\":\(ServerSentEvents.quoted(threadID)),\"turn_id\":\(ServerSentEvents.quoted(turn))}}",
            into: &buffer)
        frame("{\"type\":\"start-step\"}", into: &buffer)
        frame("{\"type\":\"text-start\",\"id\":\"\(textPartID)\"}", into: &buffer)
        return buffer
    }

    /// The frames for one turn event (the end of the stream included, after the final event).
    static func frames(for event: TurnEvent) -> ByteBuffer {
        var buffer = ByteBuffer()
        switch event {
        case .ping:
            return ServerSentEvents.ping
        case .chunk(let text, _):
            buffer.reserveCapacity(text.utf8.count + 56)
            buffer.writeStaticString("data: {\"type\":\"text-delta\",\"id\":\"text-1\",\"delta\":")
            ServerSentEvents.writeJSONString(text, into: &buffer)
            buffer.writeStaticString("}\n\n")
        case .done(let outcome):
            frame("{\"type\":\"text-end\",\"id\":\"\(textPartID)\"}", into: &buffer)
            frame("{\"type\":\"finish-step\"}", into: &buffer)
            if outcome.stopReason == "cancelled" {
                // Stopped (POST /threads/{id}/cancel): what arrived is stored, as `cancelled`.
                frame("{\"type\":\"abort\"}", into: &buffer)
            } else {
                var metadata = [
                    "\"thread_id\":\(ServerSentEvents.quoted(outcome.threadID))",
                    "\"turn_id\":\(ServerSentEvents.quoted(outcome.turnID.uuidString.lowercased()))",
                    "\"usage\":\(ServerSentEvents.usageJSON(outcome.usage))",
                ]
                if let stop = outcome.stopReason { metadata.append("\"stop_reason\":\(ServerSentEvents.quoted(stop))") }
                if let model = outcome.model { metadata.append("\"model\":\(ServerSentEvents.quoted(model))") }
                if let ms = outcome.firstTokenMs { metadata.append("\"first_token_ms\":\(ms)") }
                frame("{\"type\":\"finish\",\"messageMetadata\":{" + metadata.joined(separator: ",") + "}}", into: &buffer)
            }
            buffer.writeStaticString("data: [DONE]\n\n")
        case .failed(let failure):
            frame("{\"type\":\"text-end\",\"id\":\"\(textPartID)\"}", into: &buffer)
            frame("{\"type\":\"finish-step\"}", into: &buffer)
            frame(
                "{\"type\":\"error\",\"errorText\":\(ServerSentEvents.quoted("\(failure.type): \(failure.message)"))}",
                into: &buffer)
            buffer.writeStaticString("data: [DONE]\n\n")
        }
        return buffer
    }

    private static func frame(_ json: String, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("data: ")
        buffer.writeString(json)
        buffer.writeStaticString("\n\n")
    }
}
