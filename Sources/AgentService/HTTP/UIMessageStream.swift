import Foundation
import NIOCore

/// The AI SDK's UI Message Stream protocol (v1, header `x-vercel-ai-ui-message-stream: v1`), the second encoding of
/// a turn's events, for `useChat` frontends (`POST /api/chat`, `GET /api/chat/{id}/stream`).
///
/// One turn is one assistant message:
/// `start` (message id = turn id) → `start-step` → `text-start` → `text-delta`… → `text-end` → `finish-step` →
/// `finish` (or `abort` for a stopped reply, or `error`) → `data: [DONE]`. A tool call closes the text part and sends
/// `tool-input-start` and `tool-input-available`; its result is `tool-output-available` (`output` is the result's
/// summary) or `tool-output-error`; text after tools is a new step with a new text part (`text-2`, …). Thinking, for
/// clients that ask, is `reasoning-start`/`reasoning-delta`/`reasoning-end`. Tool chunks are `dynamic` (the AI SDK's
/// flag for tools the client does not define: they run here), so `useChat` shows them as `dynamic-tool` parts. Only the fields of the `ai` package's
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

    /// Encodes one stream's events; it knows which parts are open (after ``prelude(threadID:turnID:)``: a step and
    /// `text-1`).
    struct Encoder {
        private var textPart = 1
        private var textOpen = true
        private var stepOpen = true
        private var reasoningPart = 0
        private var reasoningOpen = false

        /// The frames for one turn event (the end of the stream included, after the final event).
        mutating func frames(for event: TurnEvent) -> ByteBuffer {
            var buffer = ByteBuffer()
            switch event {
            case .ping:
                return ServerSentEvents.ping
            case .chunk(let text, _):
                closeReasoning(into: &buffer)
                if !stepOpen {
                    frame("{\"type\":\"start-step\"}", into: &buffer)
                    stepOpen = true
                }
                if !textOpen {
                    textPart += 1
                    textOpen = true
                    frame("{\"type\":\"text-start\",\"id\":\"text-\(textPart)\"}", into: &buffer)
                }
                buffer.reserveCapacity(text.utf8.count + 56)
                buffer.writeStaticString("data: {\"type\":\"text-delta\",\"id\":\"text-")
                buffer.writeString(String(textPart))
                buffer.writeStaticString("\",\"delta\":")
                ServerSentEvents.writeJSONString(text, into: &buffer)
                buffer.writeStaticString("}\n\n")
            case .activity(.thinking(let text)):
                if !stepOpen {
                    frame("{\"type\":\"start-step\"}", into: &buffer)
                    stepOpen = true
                }
                if !reasoningOpen {
                    reasoningPart += 1
                    reasoningOpen = true
                    frame("{\"type\":\"reasoning-start\",\"id\":\"reasoning-\(reasoningPart)\"}", into: &buffer)
                }
                frame(
                    "{\"type\":\"reasoning-delta\",\"id\":\"reasoning-\(reasoningPart)\",\"delta\":\(ServerSentEvents.quoted(text))}",
                    into: &buffer)
            case .activity(.toolCall(let id, let name, let input)):
                closeReasoning(into: &buffer)
                closeText(into: &buffer)
                let callID = ServerSentEvents.quoted(id)
                let toolName = ServerSentEvents.quoted(name)
                frame("{\"type\":\"tool-input-start\",\"toolCallId\":\(callID),\"toolName\":\(toolName),\"dynamic\":true}", into: &buffer)
                frame(
                    "{\"type\":\"tool-input-available\",\"toolCallId\":\(callID),\"toolName\":\(toolName),\"input\":\(input),\"dynamic\":true}",
                    into: &buffer)
            case .activity(.toolResult(let id, _, let isError, let summary)):
                let callID = ServerSentEvents.quoted(id)
                if isError {
                    frame(
                        "{\"type\":\"tool-output-error\",\"toolCallId\":\(callID),\"errorText\":\(ServerSentEvents.quoted(summary)),\"dynamic\":true}",
                        into: &buffer)
                } else {
                    frame(
                        "{\"type\":\"tool-output-available\",\"toolCallId\":\(callID),\"output\":\(ServerSentEvents.quoted(summary)),\"dynamic\":true}",
                        into: &buffer)
                }
                // The next text is the next step's.
                if stepOpen {
                    frame("{\"type\":\"finish-step\"}", into: &buffer)
                    stepOpen = false
                }
            case .done(let outcome):
                closeReasoning(into: &buffer)
                closeText(into: &buffer)
                if stepOpen { frame("{\"type\":\"finish-step\"}", into: &buffer) }
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
                closeReasoning(into: &buffer)
                closeText(into: &buffer)
                if stepOpen { frame("{\"type\":\"finish-step\"}", into: &buffer) }
                frame(
                    "{\"type\":\"error\",\"errorText\":\(ServerSentEvents.quoted("\(failure.type): \(failure.message)"))}",
                    into: &buffer)
                buffer.writeStaticString("data: [DONE]\n\n")
            }
            return buffer
        }

        private mutating func closeText(into buffer: inout ByteBuffer) {
            guard textOpen else { return }
            frame("{\"type\":\"text-end\",\"id\":\"text-\(textPart)\"}", into: &buffer)
            textOpen = false
        }

        private mutating func closeReasoning(into buffer: inout ByteBuffer) {
            guard reasoningOpen else { return }
            frame("{\"type\":\"reasoning-end\",\"id\":\"reasoning-\(reasoningPart)\"}", into: &buffer)
            reasoningOpen = false
        }
    }

    private static func frame(_ json: String, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("data: ")
        buffer.writeString(json)
        buffer.writeStaticString("\n\n")
    }
}
