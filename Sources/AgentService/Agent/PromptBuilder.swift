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
    /// The tools offered to Claude (MCP servers' and built-in), in a stable order.
    var tools: [ToolSpec] = []
    /// Extended thinking's budget in tokens; nil leaves it off.
    var thinkingBudget: Int?

    /// Builds the request for `question` after `history` (oldest first).
    func request(history: [Turn], question: String, timeZone: TimeZone, now: Date, userID: UUID) -> MessagesRequest {
        let timeNote = Self.localTimeNote(now: now, timeZone: timeZone)
        var budget =
            contextBudgetTokens - Self.estimatedTokens(systemPrompt) - Self.estimatedTokens(question)
            - Self.estimatedTokens(timeNote)
        // Walk back from the newest turn, keeping whole turns while they fit.
        var kept: [[MessageParam]] = []
        for turn in history.reversed() {
            guard let exchange = Self.exchange(of: turn, keepingThinking: thinkingBudget != nil) else { continue }
            let cost = exchange.reduce(0) { $0 + Self.estimatedTokens($1) }
            if cost > budget { break }
            budget -= cost
            kept.append(exchange)
        }
        var messages: [MessageParam] = []
        for exchange in kept.reversed() { messages += exchange }
        messages.append(
            MessageParam(
                role: .user,
                content: [
                    TextBlock(question, cacheControl: .ephemeral),
                    TextBlock(timeNote),
                ]
            )
        )
        var request = MessagesRequest(
            model: model,
            maxTokens: maxTokens,
            system: [TextBlock(systemPrompt, cacheControl: .ephemeral)],
            messages: messages,
            metadataUserID: userID.uuidString.lowercased()
        )
        request.tools = tools
        request.thinkingBudget = thinkingBudget
        return request
    }

    /// The messages a stored turn replays as: its question, then its reply (text alone), or its stored content (every
    /// step of a tool turn, byte-identical to what Claude was sent in that turn); nil for a turn not worth replaying.
    ///
    /// Stored content is cut to what the API accepts as history: it ends with an assistant message, and tool calls
    /// that never got a result (the turn was stopped or failed while they ran, or they were past `MAX_TOOL_ROUNDS`)
    /// are left out. Thinking blocks are left out when thinking is off now.
    static func exchange(of turn: Turn, keepingThinking: Bool) -> [MessageParam]? {
        if let content = turn.content, turn.status == .completed || turn.status == .cancelled,
            !turn.question.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
            var steps = try? Transcript.decode(content)
        {
            if !keepingThinking {
                steps = steps.map { step in
                    MessageParam(
                        role: step.role,
                        blocks: step.blocks.filter {
                            switch $0 {
                            case .thinking, .redactedThinking: false
                            default: true
                            }
                        })
                }
            }
            steps = Self.answeredSteps(steps)
            if !steps.isEmpty { return [MessageParam(role: .user, text: turn.question)] + steps }
        }
        guard let exchange = exchange(of: turn) else { return nil }
        return [
            MessageParam(role: .user, content: [TextBlock(exchange.question)]),
            MessageParam(role: .assistant, content: [TextBlock(exchange.reply)]),
        ]
    }

    /// `steps` (assistant, user with tool results, assistant, …) ending with an assistant message, without tool calls
    /// that have no result in the message after them.
    static func answeredSteps(_ steps: [MessageParam]) -> [MessageParam] {
        var steps = steps
        while true {
            while let last = steps.last, last.role != .assistant { steps.removeLast() }
            guard var last = steps.popLast() else { return [] }
            last.blocks.removeAll {
                if case .toolUse = $0 { return true }
                return false
            }
            // A step without text (thinking alone, or only the calls just removed) cannot end a reply: the one
            // before it does, without its calls.
            if last.blocks.contains(where: {
                if case .text = $0 { return true }
                return false
            }) {
                steps.append(last)
                return steps
            }
        }
    }

    static func estimatedTokens(_ message: MessageParam) -> Int {
        message.blocks.reduce(0) { total, block in
            switch block {
            case .text(let text): total + estimatedTokens(text.text)
            case .toolUse(let use): total + estimatedTokens(use.name) + estimatedTokens(use.input.canonicalText)
            case .toolResult(let result): total + estimatedTokens(result.content) + 4
            case .thinking(let thinking): total + estimatedTokens(thinking.thinking) + estimatedTokens(thinking.signature)
            case .redactedThinking(let data): total + estimatedTokens(data)
            }
        }
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
