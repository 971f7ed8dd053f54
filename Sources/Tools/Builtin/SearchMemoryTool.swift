import Foundation
public import ThreadStore

/// `search_memory`: full-text search over the calling user's own earlier turns in other threads.
///
/// Input `{"query": "…", "limit": N?}` (limit 1–20, default 5). The current thread (the context's) is left out: its
/// history is already in the prompt. The answer lists each match as thread, turn, date and snippet.
public struct SearchMemoryTool: BuiltinTool {
    let repository: ThreadRepository

    public init(repository: ThreadRepository) {
        self.repository = repository
    }

    public let definition = ToolDefinition(
        name: "search_memory",
        description:
            "Search the user's own earlier conversations (other threads) for facts they mentioned before. "
            + "Use a few distinctive words; quotes match a phrase, a leading - excludes a word.",
        inputSchema:
            #"{"additionalProperties":false,"properties":{"limit":{"description":"How many matches, 1 to 20 (default 5).","maximum":20,"minimum":1,"type":"integer"},"query":{"description":"Words to look for.","type":"string"}},"required":["query"],"type":"object"}"#
    )

    public func call(input: String, context: ToolCallContext) async -> ToolOutcome {
        guard let data = input.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let query = object["query"] as? String
        else { return ToolOutcome(text: "the input needs \"query\" (a string)", isError: true) }
        let limit = min(20, max(1, (object["limit"] as? NSNumber)?.intValue ?? 5))
        do {
            let matches = try await repository.searchMemory(
                userID: context.userID, query: query, excludingThread: context.threadID, limit: limit)
            guard !matches.isEmpty else { return ToolOutcome(text: "No earlier conversation matches.", isError: false) }
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withFullDate]
            let lines = matches.map { match in
                "- thread \"\(match.threadTitle ?? match.threadID)\" (id \(match.threadID)), turn \(match.seq), "
                    + "\(formatter.string(from: match.createdAt)): \(match.snippet.replacingOccurrences(of: "\n", with: " "))"
            }
            return ToolOutcome(text: lines.joined(separator: "\n"), isError: false)
        } catch is CancellationError {
            return ToolOutcome(text: "the search was cancelled", isError: true)
        } catch {
            return ToolOutcome(text: "the memory search failed: \(error)", isError: true)
        }
    }
}
