import Foundation
import HTTPTypes
import Hummingbird

/// Validates the body the AI SDK's `useChat` sends to `POST /api/chat` (its default `DefaultChatTransport`):
/// `{"id", "messages", "trigger", "messageId"?}` plus whatever the app adds through the transport's `body`
/// (`user_id` in development mode, `user_timezone`).
///
/// The thread's history comes from our database, never from `messages`: only the last user message is read, as the
/// question. A client cannot rewrite what Claude is told the conversation was.
struct ChatRequest: Sendable {
    enum Trigger: String, Sendable {
        case submitMessage = "submit-message"
        case regenerateMessage = "regenerate-message"
    }

    var threadID: String
    var question: String
    var trigger: Trigger
    var claimedUserID: String?
    var timeZone: TimeZone

    static func parse(
        body: ByteBuffer, headers: HTTPFields, limits: QueryRequest.Limits
    ) throws(APIError) -> ChatRequest {
        let object = try QueryRequest.jsonObject(body: body, headers: headers)
        guard let id = object["id"] else { throw .invalid("id", "is required (the chat id, our thread id)") }
        guard let idText = id as? String else { throw .invalid("id", "must be a string") }
        let threadID: String
        do {
            threadID = try QueryRequest.threadID(idText)
        } catch {
            throw .invalid("id", "must be 1 to 128 letters, digits or - _ . : @ (it is the thread id)")
        }
        let trigger: Trigger
        switch object["trigger"] {
        case nil, is NSNull: trigger = .submitMessage
        case let text as String:
            guard let known = Trigger(rawValue: text) else {
                throw .invalid("trigger", "must be submit-message or regenerate-message")
            }
            trigger = known
        default: throw .invalid("trigger", "must be submit-message or regenerate-message")
        }
        guard let messages = object["messages"] as? [Any], !messages.isEmpty else {
            throw .invalid("messages", "must be a non-empty array of UI messages")
        }
        guard
            let last = messages.reversed().lazy.compactMap({ $0 as? [String: Any] })
                .first(where: { $0["role"] as? String == "user" })
        else { throw .invalid("messages", "has no user message") }
        let text: String
        if let parts = last["parts"] as? [Any] {
            text = parts.compactMap { part -> String? in
                guard let part = part as? [String: Any], part["type"] as? String == "text" else { return nil }
                return part["text"] as? String
            }.joined()
        } else if let content = last["content"] as? String {
            text = content  // AI SDK 4's message shape
        } else {
            throw .invalid("messages", "the last user message has no text parts")
        }
        let question: String
        do {
            question = try QueryRequest.question(text, limits: limits)
        } catch {
            throw .invalid("messages", "the last user message's text \(error.message.dropFirst("question: ".count))")
        }
        return ChatRequest(
            threadID: threadID, question: question, trigger: trigger,
            claimedUserID: try QueryRequest.claimedUserID(object["user_id"]),
            timeZone: try QueryRequest.timeZone(object["user_timezone"]))
    }
}
