public import Foundation

/// One earlier turn that matched a memory search.
public struct MemoryMatch: Sendable, Hashable, Codable {
    public var threadID: String
    /// The thread's title (its first question, cut to about 80 characters).
    public var threadTitle: String?
    /// The turn's number within its thread.
    public var seq: Int
    /// When the turn started.
    public var createdAt: Date
    /// The matching passages of the question and reply (`ts_headline`, matches in `**…**`), at most about 60 words.
    public var snippet: String
    /// Postgres' `ts_rank` (question matches weigh more than reply matches); higher is better.
    public var rank: Double

    public init(threadID: String, threadTitle: String?, seq: Int, createdAt: Date, snippet: String, rank: Double) {
        self.threadID = threadID
        self.threadTitle = threadTitle
        self.seq = seq
        self.createdAt = createdAt
        self.snippet = snippet
        self.rank = rank
    }
}

extension ThreadRepository {
    /// The most a memory search returns, whatever the caller asks for.
    public static let maxMemorySearchResults = 50
    /// Longer query text is cut to this many characters (a model may send anything; a query is a few words).
    public static let maxMemoryQueryLength = 1_000

    /// Full-text search over the user's own finished turns (question and reply), best match first, in one round trip.
    ///
    /// The query is parsed by `websearch_to_tsquery('simple', …)`, which accepts any text (quotes, `or`, `-`, stray
    /// operators) without a syntax error, so a user's or a model's words can be passed as they are. Only `completed`
    /// and `cancelled` turns are searched: those are the ones the conversation itself keeps (a stopped reply is what
    /// the user read); a `streaming` turn is the one in progress, and `failed`/`interrupted` ones are partial replies
    /// the model never finished.
    ///
    /// - Parameters:
    ///   - userID: the verified user; the query runs under row-level security as this user too.
    ///   - query: free text; cut to `maxMemoryQueryLength` characters. Blank text (or text with no words) finds nothing.
    ///   - excludingThread: a thread to leave out (the current one, whose history Claude already has).
    ///   - limit: at most this many matches, clamped to `maxMemorySearchResults`.
    /// - Throws: `StoreError` `.invalidArgument` for a negative limit, `.invalidText` for a NUL byte.
    public func searchMemory(userID: UUID, query: String, excludingThread: String?, limit: Int) async throws
        -> [MemoryMatch]
    {
        guard limit >= 0 else { throw StoreError(.invalidArgument, "limit must not be negative") }
        try StoreError.checkText(query, field: "query")
        try StoreError.checkText(excludingThread, field: "excludingThread")
        let text = String(query.prefix(Self.maxMemoryQueryLength))
        let limit = min(limit, Self.maxMemorySearchResults)
        guard limit > 0, text.contains(where: { $0.isLetter || $0.isNumber }) else { return [] }
        // The headline is computed for the returned rows only (it re-parses the text, the costly part).
        let result = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                """
                SELECT m.thread_id, th.title, m.seq, extract(epoch FROM m.started_at)::text,
                    ts_headline('simple'::regconfig,
                        left(m.question, 20000) || E'\\n' || left(coalesce(m.reply, ''), 100000), m.query,
                        'MaxWords=30, MinWords=8, MaxFragments=2, FragmentDelimiter=" … ", StartSel=**, StopSel=**'),
                    m.rank
                FROM (
                    SELECT t.user_id, t.thread_id, t.seq, t.started_at, t.question, t.reply, q.query,
                        ts_rank(t.search_vector, q.query) AS rank
                    FROM (SELECT websearch_to_tsquery('simple'::regconfig, \(text)::text) AS query) q
                    JOIN turns t ON t.search_vector @@ q.query
                    WHERE t.user_id = \(userID)::uuid AND t.status IN ('completed', 'cancelled')
                        AND (\(excludingThread)::text IS NULL OR t.thread_id <> \(excludingThread)::text)
                    ORDER BY rank DESC, t.started_at DESC
                    LIMIT \(limit)::int
                ) m
                JOIN threads th ON th.user_id = m.user_id AND th.id = m.thread_id
                ORDER BY m.rank DESC, m.started_at DESC
                """)
        }
        return result.rows.indices.compactMap { row in
            guard let thread = result.string(row, 0), let seq = result.int(row, 2),
                let created = result.epochDate(row, 3), let snippet = result.string(row, 4)
            else { return nil }
            return MemoryMatch(
                threadID: thread, threadTitle: result.string(row, 1), seq: seq, createdAt: created, snippet: snippet,
                rank: result.string(row, 5).flatMap { Double($0) } ?? 0)
        }
    }
}
