import ArgumentParser
import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `agent-service chat`: talk to the agent in the terminal, through the same agent layer as the HTTP API.
struct ChatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with the agent in the terminal; every turn is stored exactly as over HTTP.",
        discussion: """
            Type a message and press Enter; the reply streams as it arrives. Commands: /new starts a new thread, \
            /history prints this thread, /quit (or end of input) leaves. /stop (typed while a reply streams) stops \
            the reply: what arrived is stored as cancelled and stays in the conversation. Ctrl-C during a reply \
            stops printing it, but the reply is still read to the end and stored. With standard input not a \
            terminal, each line is one \
            question, so a conversation can be scripted: printf 'hi\\nand then?\\n' | agent-service chat --user ...
            """
    )

    @OptionGroup var userOptions: UserOptions

    @Option(help: "Continue this thread (default: a new one).")
    var thread: String?

    @Option(help: "The user's IANA time zone, given to the model with each message (default: the machine's).")
    var timezone: String?

    mutating func validate() throws {
        if let thread, (try? QueryRequest.threadID(thread)) == nil {
            throw ValidationError("--thread: '\(thread)' must be 1 to 128 letters, digits or - _ . : @")
        }
        if let timezone, TimeZone(identifier: timezone) == nil {
            throw ValidationError("--timezone: '\(timezone)' is not an IANA time zone such as Europe/Berlin")
        }
    }

    func run() async throws {
        let runtime = await CLI.runtime()
        let user = userOptions.user
        let zone = timezone.flatMap(TimeZone.init(identifier:)) ?? .current
        let interactive = CLI.stdinIsTerminal
        let style = Style(enabled: CLI.stdoutIsTerminal)
        var threadID = thread ?? Self.newThreadID()
        let printer = Mutex<Task<Void, Never>?>(nil)
        let interrupts = ShutdownSignals { _ in
            // During a reply: stop printing (the turn goes on and is stored). At the prompt: leave.
            let running = printer.withLock { task -> Bool in
                guard let task else { return false }
                task.cancel()
                return true
            }
            if !running {
                Task {
                    CLI.write("\n")
                    await runtime.shutdown()
                    Glibc.exit(0)
                }
            }
        }
        defer { interrupts.cancel() }

        if interactive {
            CLI.write(
                style.dim(
                    "Chatting as \(user.uuidString.lowercased()) in thread \(threadID) (\(runtime.configuration.usesOfflineStub ? "offline stub" : runtime.configuration.model)). "
                        + "/new, /history, /quit; /stop stops a reply (what arrived is kept); Ctrl-C only stops printing it.") + "\n")
        }
        // While a reply streams, "/stop" is taken by the input reader itself: the reply is stopped at once.
        let streaming = Mutex<String?>(nil)
        var lines = Self.standardInputLines { line in
            guard line.trimmingCharacters(in: .whitespaces) == "/stop", let thread = streaming.withLock({ $0 }) else {
                return false
            }
            Task { _ = try? await runtime.agent.stop(userID: user, threadID: thread) }
            return true
        }.makeAsyncIterator()
        while true {
            if interactive { CLI.write(style.user("you> ")) }
            guard let line = await lines.next() else { break }
            let question = line.trimmingCharacters(in: .whitespaces)
            if question.isEmpty { continue }
            switch question {
            case "/quit", "/exit":
                await runtime.shutdown()
                return
            case "/stop":
                CLI.write(style.dim("No reply is streaming.") + "\n")
                continue
            case "/new":
                threadID = Self.newThreadID()
                CLI.write(style.dim("New thread \(threadID)") + "\n")
                continue
            case "/history":
                let turns = try await CLI.allTurns(runtime.repository, user: user, thread: threadID) ?? []
                CLI.write(
                    TranscriptFormatter(threadID: threadID, userID: user, timeZone: zone).text(turns, style: style))
                continue
            default:
                break
            }
            // A reply interrupted with Ctrl-C may still be streaming; the thread takes one turn at a time.
            await runtime.supervisor.waitUntilIdle()
            let handle: TurnHandle
            do {
                handle = try await runtime.agent.startTurn(
                    TurnInput(userID: user, threadID: threadID, question: question, timeZone: zone, idempotencyKey: nil)
                )
            } catch {
                FileHandle.standardError.write(Data("agent-service: \(Self.describe(error))\n".utf8))
                continue
            }
            if interactive { CLI.write(style.assistant("claude> ")) }
            let task = Task {
                for await event in handle.events {
                    if Task.isCancelled { break }
                    switch event {
                    case .chunk(let text, _): CLI.write(TerminalText.safe(text))
                    case .ping, .activity(.thinking): continue
                    case .activity(let activity): CLI.write(style.dim(Self.describe(activity)))
                    case .done(let outcome):
                        if outcome.stopReason == "cancelled" { CLI.write(style.dim(" [stopped]")) }
                    case .failed(let failure): CLI.write("\n" + style.warning("[\(failure.type): \(failure.message)]"))
                    }
                }
                if Task.isCancelled { CLI.write(style.dim(" [stopped; the reply is still being saved]")) }
                CLI.write("\n")
            }
            printer.withLock { $0 = task }
            streaming.withLock { $0 = threadID }
            await task.value
            streaming.withLock { $0 = nil }
            printer.withLock { $0 = nil }
        }
        await runtime.shutdown()
    }

    static func newThreadID() -> String { UUID().uuidString.lowercased() }

    /// A tool call or result as one dim line of the transcript.
    static func describe(_ activity: TurnActivity) -> String {
        switch activity {
        case .toolCall(_, let name, let input):
            return "\n[tool \(TerminalText.safe(name)) \(TerminalText.safe(String(input.prefix(200))))]\n"
        case .toolResult(_, let name, let isError, let summary):
            return "[\(isError ? "tool error" : "result") \(TerminalText.safe(name)): \(TerminalText.safe(summary))]\n"
        case .thinking(let text):
            return TerminalText.safe(text)
        }
    }

    static func describe(_ error: any Error) -> String {
        guard let error = error as? AgentError else { return "\(error)" }
        switch error {
        case .threadBusy: return "another reply is still streaming on this thread"
        case .turnInProgress: return "this turn is still in progress"
        case .shuttingDown: return "shutting down"
        case .storeUnavailable(let store): return "database unavailable (\(store))"
        case .invalidInput(let field, let message): return "\(field): \(message)"
        case .tooManyTurns(let perUser, let limit):
            return perUser ? "this user already runs \(limit) replies" : "the service already runs \(limit) replies"
        case .idempotencyKeyReused: return "this idempotency key belongs to another question"
        }
    }

    /// Lines of standard input, read on a thread of their own (reading blocks); a line `intercept` takes is not
    /// passed on.
    static func standardInputLines(intercept: @escaping @Sendable (String) -> Bool) -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        Thread {
            while let line = readLine(strippingNewline: true) {
                if !intercept(line) { continuation.yield(line) }
            }
            continuation.finish()
        }.start()
        return stream
    }
}
