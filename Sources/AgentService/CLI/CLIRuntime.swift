import ArgumentParser
import Foundation
import Logging
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

/// Options shared by the subcommands that work on one user's threads.
struct UserOptions: ParsableArguments {
    @Option(name: .customLong("user"), help: "The user's id (a UUID), as the frontend sends it in user_id.")
    var userText: String

    var user: UUID { UUID(uuidString: userText)! }

    mutating func validate() throws {
        guard userText.count == 36, UUID(uuidString: userText) != nil else {
            throw ValidationError("--user: '\(userText)' is not a UUID (e.g. 3f2b8a4e-5c1d-4e7f-9a0b-1c2d3e4f5a6b)")
        }
    }
}

/// Output formats of `replay` and `threads`.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, markdown, json
}

extension CLI {
    /// The in-process agent for CLI commands: the same configuration as `serve` (environment, `.env`, embedded
    /// Postgres when DATABASE_URL is unset), logging only warnings unless LOG_LEVEL says otherwise.
    static func runtime() async -> AgentRuntime {
        do {
            let environment = try AppEnvironment.current()
            var configuration = try ServiceConfiguration(environment: environment)
            if environment["LOG_LEVEL"] == nil { configuration.logLevel = .warning }
            let logger = bootstrapLogging(level: configuration.logLevel)
            let runtime = try await AgentRuntime.start(
                configuration: configuration, environment: environment, logger: logger)
            runtime.runTurns()
            return runtime
        } catch {
            fail("\(error)")
        }
    }

    /// Every turn of a thread, oldest first; nil when the thread does not exist for this user.
    static func allTurns(_ repository: ThreadRepository, user: UUID, thread: String) async throws -> [Turn]? {
        var pages: [[Turn]] = []
        var before: Int?
        while true {
            guard let page = try await repository.turns(userID: user, threadID: thread, limit: 100, beforeSeq: before)
            else { return pages.isEmpty ? nil : pages.reversed().flatMap { $0 } }
            pages.append(page)
            guard page.count == 100, let first = page.first else { break }
            before = first.seq
        }
        return pages.reversed().flatMap { $0 }
    }

    /// Whether standard output is a terminal (colour and prompts only then).
    static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }
    static var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }

    /// Writes to standard output immediately (no buffering between chunks).
    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// ANSI styling that disappears when output is not a terminal.
struct Style {
    let enabled: Bool
    func bold(_ text: String) -> String { enabled ? "\u{1B}[1m\(text)\u{1B}[0m" : text }
    func dim(_ text: String) -> String { enabled ? "\u{1B}[2m\(text)\u{1B}[0m" : text }
    func user(_ text: String) -> String { enabled ? "\u{1B}[1;36m\(text)\u{1B}[0m" : text }
    func assistant(_ text: String) -> String { enabled ? "\u{1B}[1;35m\(text)\u{1B}[0m" : text }
    func warning(_ text: String) -> String { enabled ? "\u{1B}[1;33m\(text)\u{1B}[0m" : text }
}
