import ArgumentParser
import Foundation
import ThreadStore

/// `agent-service threads`: a user's threads, newest first.
struct ThreadsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "threads",
        abstract: "List a user's threads, newest first, with turn count and last activity."
    )

    @OptionGroup var userOptions: UserOptions

    @Option(help: "How many threads to list (1-1000).")
    var limit = 50

    @Option(help: "text or json.")
    var format: OutputFormat = .text

    mutating func validate() throws {
        guard (1...1_000).contains(limit) else { throw ValidationError("--limit must be from 1 to 1000") }
        guard format != .markdown else { throw ValidationError("--format must be text or json") }
    }

    func run() async throws {
        let runtime = await CLI.runtime()
        let threads = try await runtime.repository.listThreads(userID: userOptions.user, limit: limit, before: nil)
        switch format {
        case .json:
            let items: [[String: Any]] = threads.map {
                [
                    "thread_id": $0.id, "title": $0.title as Any? ?? NSNull(), "turn_count": $0.turnCount,
                    "created_at": Timestamps.format($0.createdAt), "updated_at": Timestamps.format($0.updatedAt),
                ]
            }
            let data = try JSONSerialization.data(
                withJSONObject: ["user_id": userOptions.user.uuidString.lowercased(), "threads": items],
                options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            CLI.write(String(decoding: data, as: UTF8.self) + "\n")
        case .text, .markdown:
            if threads.isEmpty {
                CLI.write("No threads for user \(userOptions.user.uuidString.lowercased()).\n")
            }
            let style = Style(enabled: CLI.stdoutIsTerminal)
            for thread in threads {
                let title = (thread.title ?? "").replacingOccurrences(of: "\n", with: " ")
                CLI.write(
                    style.bold(thread.id) + "  "
                        + style.dim(
                            "\(thread.turnCount) turn(s), last \(TranscriptFormatter.localTime(thread.updatedAt, .current))"
                        )
                        + "\n    " + String(title.prefix(80)) + "\n")
            }
        }
        await runtime.shutdown()
    }
}
