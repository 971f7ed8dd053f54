import Claude
import Foundation
import ThreadStore

/// Renders a thread's turns for `replay` and the chat's `/history`: text (optionally coloured), Markdown, JSON.
struct TranscriptFormatter {
    var threadID: String
    var userID: UUID
    /// Where to show times: this zone when given, else each turn's stored user time zone, else UTC.
    var timeZone: TimeZone?

    func text(_ turns: [Turn], style: Style) -> String {
        var out =
            style.bold("Thread \(threadID)")
            + style.dim(" · user \(userID.uuidString.lowercased()) · \(turns.count) turn(s)") + "\n"
        for turn in turns {
            out += "\n" + style.dim("── Turn \(turn.seq) · \(header(turn))") + "\n"
            if turn.status != .completed {
                out += style.warning("[\(turn.status.rawValue)\(turn.error.map { ": \(TerminalText.safe($0))" } ?? "")]") + "\n"
            }
            out += style.user("You: ") + TerminalText.safe(turn.question) + "\n"
            for line in Self.toolLines(turn) { out += style.dim(TerminalText.safe(line)) + "\n" }
            out += style.assistant("Claude: ") + TerminalText.safe(turn.reply ?? "") + "\n"
        }
        return out
    }

    func markdown(_ turns: [Turn]) -> String {
        var out = "# Thread `\(threadID)`\n\n_User `\(userID.uuidString.lowercased())`, \(turns.count) turn(s)._\n"
        for turn in turns {
            out += "\n## Turn \(turn.seq)\n\n_\(header(turn))_\n"
            if turn.status != .completed {
                out += "\n> **\(turn.status.rawValue)**\(turn.error.map { ": \(TerminalText.safe($0))" } ?? "")\n"
            }
            out += "\n### User\n\n\(TerminalText.safe(turn.question))\n"
            let tools = Self.toolLines(turn)
            if !tools.isEmpty {
                out += "\n### Tools\n\n" + tools.map { "- `\(TerminalText.safe($0))`\n" }.joined()
            }
            out += "\n### Assistant\n\n\(TerminalText.safe(turn.reply ?? ""))\n"
        }
        return out
    }

    func json(_ turns: [Turn]) throws -> String {
        let document = TranscriptDocument(
            threadID: threadID, userID: userID.uuidString.lowercased(), turns: turns.map(TranscriptDocument.Entry.init))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Timestamps.format(date))
        }
        return String(decoding: try encoder.encode(document), as: UTF8.self) + "\n"
    }

    /// One line per tool call of a turn's stored content: `[tool name {input}] → result`, cut to 300 characters.
    static func toolLines(_ turn: Turn) -> [String] {
        guard let content = turn.content, let steps = try? Transcript.decode(content) else { return [] }
        var results: [String: ToolResultBlock] = [:]
        for step in steps {
            for case .toolResult(let result) in step.blocks { results[result.toolUseID] = result }
        }
        var lines: [String] = []
        for step in steps {
            for case .toolUse(let use) in step.blocks {
                var line = "[tool \(use.name) \(use.input.canonicalText)]"
                if let result = results[use.id] {
                    let first = result.content.prefix { $0 != "\n" }
                    line += result.isError ? " → error: \(first)" : " → \(first)"
                } else {
                    line += " → (no result)"
                }
                lines.append(line.count > 300 ? String(line.prefix(300)) + "…" : line)
            }
        }
        return lines
    }

    /// "2026-11-24 18:05 Europe/Berlin · claude-sonnet-4-5 · 12 in / 34 out tokens · first token 420 ms"
    func header(_ turn: Turn) -> String {
        let zone = timeZone ?? turn.userTimeZone.flatMap(TimeZone.init(identifier:)) ?? TimeZone(identifier: "UTC")!
        var parts = [Self.localTime(turn.startedAt, zone)]
        if let model = turn.model { parts.append(model) }
        let usage = turn.usage
        if usage.inputTokens + usage.outputTokens > 0 {
            var tokens = "\(usage.inputTokens) in / \(usage.outputTokens) out tokens"
            if usage.cacheReadInputTokens > 0 { tokens += " (\(usage.cacheReadInputTokens) cached)" }
            parts.append(tokens)
        }
        if let ms = turn.firstTokenMs { parts.append("first token \(ms) ms") }
        return parts.joined(separator: " · ")
    }

    static func localTime(_ date: Date, _ zone: TimeZone) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: date)
        return String(
            format: "%04d-%02d-%02d %02d:%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0, c.hour ?? 0, c.minute ?? 0)
            + " \(zone.identifier)"
    }
}

/// The `--format json` document: every stored field, snake_case like the HTTP API.
struct TranscriptDocument: Encodable {
    var threadID: String
    var userID: String
    var turns: [Entry]

    enum CodingKeys: String, CodingKey {
        case threadID = "thread_id", userID = "user_id", turns
    }

    struct Entry: Encodable {
        var turnID: String
        var seq: Int
        var question: String
        var reply: String?
        var status: String
        var error: String?
        var model: String?
        var stopReason: String?
        var usage: Usage
        var startedAt: Date
        var finishedAt: Date?
        var firstTokenMs: Int?
        var latencyMs: Int?
        var idempotencyKey: String?
        var userTimeZone: String?

        struct Usage: Encodable {
            var inputTokens, outputTokens, cacheCreationInputTokens, cacheReadInputTokens: Int
            enum CodingKeys: String, CodingKey {
                case inputTokens = "input_tokens", outputTokens = "output_tokens"
                case cacheCreationInputTokens = "cache_creation_input_tokens"
                case cacheReadInputTokens = "cache_read_input_tokens"
            }
        }

        enum CodingKeys: String, CodingKey {
            case turnID = "turn_id", seq, question, reply, status, error, model, stopReason = "stop_reason", usage
            case startedAt = "started_at", finishedAt = "finished_at", firstTokenMs = "first_token_ms"
            case latencyMs = "latency_ms", idempotencyKey = "idempotency_key", userTimeZone = "user_timezone"
        }

        init(_ turn: Turn) {
            turnID = turn.id.uuidString.lowercased()
            seq = turn.seq
            question = turn.question
            reply = turn.reply
            status = turn.status.rawValue
            error = turn.error
            model = turn.model
            stopReason = turn.stopReason
            usage = Usage(
                inputTokens: turn.usage.inputTokens, outputTokens: turn.usage.outputTokens,
                cacheCreationInputTokens: turn.usage.cacheCreationInputTokens,
                cacheReadInputTokens: turn.usage.cacheReadInputTokens)
            startedAt = turn.startedAt
            finishedAt = turn.finishedAt
            firstTokenMs = turn.firstTokenMs
            latencyMs = turn.latencyMs
            idempotencyKey = turn.idempotencyKey
            userTimeZone = turn.userTimeZone
        }
    }
}
