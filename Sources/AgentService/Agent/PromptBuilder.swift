import Claude
import Foundation
import ThreadStore

/// Turns a thread's stored history and a new question into a Messages API request.
///
/// The request is shaped for prompt caching: the system prompt is stable and carries the first cache breakpoint;
/// earlier turns are replayed byte-identically from the database; the new question is the first block of the last
/// user message and carries the second breakpoint; the user's local time follows it in a block of its own. Because
/// the time block comes *after* the breakpoint, next turn's request (which replays this question without the time)
/// still shares the cached prefix up to and including this question.
struct PromptBuilder: Sendable {
    var systemPrompt: String
    var model: String
    var maxTokens: Int
    /// Estimated-token budget for history + question; the oldest turns are dropped first.
    var contextBudgetTokens: Int

    /// Builds the request for `question` after `history` (oldest first).
    func request(history: [Turn], question: String, timeZone: TimeZone, now: Date, userID: UUID) -> MessagesRequest {
        let timeNote = Self.localTimeNote(now: now, timeZone: timeZone)
        var budget =
            contextBudgetTokens - Self.estimatedTokens(systemPrompt) - Self.estimatedTokens(question)
            - Self.estimatedTokens(timeNote)
        // Walk back from the newest turn, keeping whole turns while they fit.
        var kept: [Turn] = []
        for turn in history.reversed() {
            guard let exchange = Self.exchange(of: turn) else { continue }
            let cost = Self.estimatedTokens(exchange.question) + Self.estimatedTokens(exchange.reply)
            if cost > budget { break }
            budget -= cost
            kept.append(turn)
        }
        var messages: [MessageParam] = []
        for turn in kept.reversed() {
            guard let exchange = Self.exchange(of: turn) else { continue }
            messages.append(MessageParam(role: .user, content: [TextBlock(exchange.question)]))
            messages.append(MessageParam(role: .assistant, content: [TextBlock(exchange.reply)]))
        }
        messages.append(
            MessageParam(
                role: .user,
                content: [
                    TextBlock(question, cacheControl: .ephemeral),
                    TextBlock(timeNote),
                ]
            )
        )
        return MessagesRequest(
            model: model,
            maxTokens: maxTokens,
            system: [TextBlock(systemPrompt, cacheControl: .ephemeral)],
            messages: messages,
            metadataUserID: userID.uuidString.lowercased()
        )
    }

    /// The question and reply of a turn worth replaying: completed or cancelled, with text on both sides.
    ///
    /// A cancelled turn's partial reply is replayed as it was stored: the user read it and pressed Stop, and what
    /// follows ("go on", "shorter please") refers to it. Failed and interrupted turns are left out whole: the user saw
    /// an error and usually asks again, which would otherwise put the same question in the prompt twice.
    static func exchange(of turn: Turn) -> (question: String, reply: String)? {
        guard turn.status == .completed || turn.status == .cancelled, let reply = turn.reply,
            !reply.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
            !turn.question.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        else { return nil }
        return (turn.question, reply)
    }

    /// A short note giving the user's local date and time, e.g. "(Sent Tuesday, 24 November 2026, 18:05 local
    /// time, Europe/Berlin.)".
    static func localTimeNote(now: Date, timeZone: TimeZone) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: now)
        let weekdays = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        let months = [
            "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
            "November", "December",
        ]
        let weekday = weekdays[((parts.weekday ?? 1) - 1) % 7]
        let month = months[((parts.month ?? 1) - 1) % 12]
        let time = String(format: "%02d:%02d", parts.hour ?? 0, parts.minute ?? 0)
        return
            "(Sent \(weekday), \(parts.day ?? 1) \(month) \(parts.year ?? 1970), \(time) local time, \(timeZone.identifier).)"
    }

    /// A deliberately pessimistic token estimate (one token per 3 UTF-8 bytes), used only for the context budget.
    static func estimatedTokens(_ text: String) -> Int {
        (text.utf8.count + 2) / 3
    }
}
