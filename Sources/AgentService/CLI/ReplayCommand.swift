import ArgumentParser
import Foundation
import ThreadStore

/// `agent-service replay`: print a stored conversation, or run its questions again.
struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Print a thread's turns, oldest first (or re-run its questions with --rerun).",
        discussion: """
            Reads the thread straight from the database (no server needs to be running), with the same \
            configuration as `serve`. --rerun sends the thread's questions again, one by one, through the agent into \
            a new thread, streams each new reply, and ends with a comparison per turn: how a new model or system \
            prompt does on a real conversation.
            """
    )

    @Argument(help: "The thread id.")
    var threadID: String

    @OptionGroup var userOptions: UserOptions

    @Option(help: "text (coloured on a terminal), markdown, or json (every stored field, for scripts).")
    var format: OutputFormat = .text

    @Option(help: "Start at this turn number (seq, 1-based).")
    var from: Int?

    @Option(help: "Show at most this many turns.")
    var limit: Int?

    @Option(help: "Show times in this IANA time zone (default: the zone the user asked from, else UTC).")
    var timezone: String?

    @Flag(help: "Send the questions again into a new thread and compare the replies.")
    var rerun = false

    @Option(help: "With --rerun: the model to use instead of CLAUDE_MODEL.")
    var model: String?

    mutating func validate() throws {
        if (try? QueryRequest.threadID(threadID)) == nil {
            throw ValidationError("thread id '\(threadID)' must be 1 to 128 letters, digits or - _ . : @")
        }
        if let from, from < 1 { throw ValidationError("--from must be 1 or more") }
        if let limit, limit < 1 { throw ValidationError("--limit must be 1 or more") }
        if let timezone, TimeZone(identifier: timezone) == nil {
            throw ValidationError("--timezone: '\(timezone)' is not an IANA time zone such as Europe/Berlin")
        }
        if model != nil && !rerun { throw ValidationError("--model only applies with --rerun") }
    }

    func run() async throws {
        let runtime = await CLI.runtime()
        let user = userOptions.user
        let zone = timezone.flatMap(TimeZone.init(identifier:))
        guard var turns = try await CLI.allTurns(runtime.repository, user: user, thread: threadID) else {
            await runtime.shutdown()
            CLI.fail("thread '\(threadID)' not found for user \(user.uuidString.lowercased())")
        }
        if let from { turns = turns.filter { $0.seq >= from } }
        if let limit { turns = Array(turns.prefix(limit)) }

        if rerun {
            let askedFrom = zone ?? turns.last?.userTimeZone.flatMap(TimeZone.init(identifier:)) ?? .current
            try await Self.rerun(
                turns, runtime: runtime, user: user, zone: askedFrom, model: model, sourceThread: threadID)
        } else {
            let formatter = TranscriptFormatter(threadID: threadID, userID: user, timeZone: zone)
            switch format {
            case .text: CLI.write(formatter.text(turns, style: Style(enabled: CLI.stdoutIsTerminal)))
            case .markdown: CLI.write(formatter.markdown(turns))
            case .json: CLI.write(try formatter.json(turns))
            }
        }
        await runtime.shutdown()
    }

    private static func rerun(
        _ turns: [Turn], runtime: AgentRuntime, user: UUID, zone: TimeZone, model: String?, sourceThread: String
    ) async throws {
        let style = Style(enabled: CLI.stdoutIsTerminal)
        let newThread = "\(sourceThread.prefix(100))-rerun-\(UUID().uuidString.prefix(8).lowercased())"
        CLI.write(
            style.bold("Re-running \(turns.count) question(s) of \(sourceThread) into new thread \(newThread)") + "\n")
        var results: [(old: Turn, new: TurnOutcome?)] = []
        for turn in turns {
            CLI.write("\n" + style.user("You: ") + TerminalText.safe(turn.question) + "\n" + style.assistant("Claude: "))
            let handle: TurnHandle
            do {
                handle = try await runtime.agent.startTurn(
                    TurnInput(
                        userID: user, threadID: newThread, question: turn.question, timeZone: zone,
                        idempotencyKey: nil, model: model))
            } catch {
                CLI.write(style.warning("[could not start: \(error)]") + "\n")
                results.append((turn, nil))
                continue
            }
            var outcome: TurnOutcome?
            for await event in handle.events {
                switch event {
                case .chunk(let text, _): CLI.write(TerminalText.safe(text))
                case .ping, .activity(.thinking): continue
                case .activity(let activity): CLI.write(style.dim(ChatCommand.describe(activity)))
                case .done(let done): outcome = done
                case .failed(let failure): CLI.write("\n" + style.warning("[\(failure.type): \(failure.message)]"))
                }
            }
            CLI.write("\n")
            results.append((turn, outcome))
        }
        CLI.write("\n" + style.bold("New thread: \(newThread)") + "\n" + comparison(results))
    }

    /// A plain table: old vs new reply length, tokens and time to first token per turn.
    static func comparison(_ results: [(old: Turn, new: TurnOutcome?)]) -> String {
        var rows = [
            [
                "turn", "old chars", "new chars", "old tokens in/out", "new tokens in/out", "old first token",
                "new first token",
            ]
        ]
        for (old, new) in results {
            rows.append([
                "\(old.seq)", "\(old.reply?.count ?? 0)", new.map { "\($0.reply.count)" } ?? "failed",
                "\(old.usage.inputTokens)/\(old.usage.outputTokens)",
                new.map { "\($0.usage.inputTokens)/\($0.usage.outputTokens)" } ?? "-",
                old.firstTokenMs.map { "\($0) ms" } ?? "-", new?.firstTokenMs.map { "\($0) ms" } ?? "-",
            ])
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }
}
