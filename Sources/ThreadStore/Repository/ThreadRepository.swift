public import Foundation

/// Chat threads and turns in Postgres. Every query is scoped by `user_id`: another user's thread id behaves exactly
/// like a thread that does not exist. Each call for a user also runs under row-level security as that user
/// (`UserScope`), in the same round trip, so the database enforces the boundary as well.
public struct ThreadRepository: Sendable {
    let database: Database
    /// Run each user's statements under row-level security as that user (always, outside benchmarks).
    let rowSecurity: Bool
    /// Begin-turn and finish-turn calls arriving together share a round trip and a commit (group admission).
    let batcher: StatementBatcher

    public init(database: Database) {
        self.init(database: database, rowSecurity: true)
    }

    /// A repository that can leave row-level security out, so a benchmark can measure what it costs.
    package init(database: Database, rowSecurity: Bool) {
        self.database = database
        self.rowSecurity = rowSecurity
        self.batcher = StatementBatcher(database: database, rowSecurity: rowSecurity)
    }

    /// Stores the question as a `streaming` turn (creating the thread if new, first marking an expired-lease streaming
    /// turn `interrupted`) and returns the thread's recent history, in one round trip (two for a racing duplicate
    /// idempotency key).
    ///
    /// - Throws: `StoreError` `.threadBusy` while another turn of the thread streams under an unexpired lease;
    ///   `.invalidText`/`.invalidArgument` (nothing written) for a NUL byte, a bad thread id or limit.
    public func beginTurn(_ request: BeginTurnRequest) async throws -> BeginTurnResult {
        try Validation.threadID(request.threadID)
        try StoreError.checkText(request.question, field: "question")
        try Validation.idempotencyKey(request.idempotencyKey)
        try StoreError.checkText(request.userTimeZone, field: "userTimeZone")
        if let zone = request.userTimeZone, zone.count > 64 {
            throw StoreError(.invalidArgument, "userTimeZone is longer than 64 characters")
        }
        guard request.historyLimit >= 0 else { throw StoreError(.invalidArgument, "historyLimit must not be negative") }
        guard request.lease > .zero else { throw StoreError(.invalidArgument, "lease must be positive") }

        let user = request.userID
        let thread = request.threadID
        let key = request.idempotencyKey
        let turnID = UUID()
        let title = Validation.title(from: request.question)
        let leaseSeconds = Validation.seconds(request.lease)
        // One statement (`Migrations/20261202180000_turn_functions.sql`): Postgres keeps its inner plans per session.
        let begin: SQLQuery = """
            SELECT * FROM agent_service.begin_turn(\(user)::uuid, \(thread)::text, \(turnID)::uuid, \(request.question)::text,
                \(title)::text, \(key)::text, \(leaseSeconds)::float8, \(request.historyLimit)::int, \(request.userTimeZone)::text)
            """
        let result: QueryResult
        do {
            result = try await batcher.run(user, begin)
        } catch let error as StoreError where error.sqlState == "23505" {
            // A concurrent begin with the same key may win either unique index (the key's, or the thread's one
            // streaming turn, whichever the insert checked first): the key's turn existing now is the answer.
            if let key, let existing = try await turn(userID: user, idempotencyKey: key) {
                return .duplicate(existing)
            }
            throw StoreError(.threadBusy, "another turn of this thread is still streaming", sqlState: error.sqlState)
        }
        var seq: Int?
        var created = false
        var recovered: [UUID] = []
        var history: [Turn] = []
        for (index, row) in result.rows.enumerated() {
            let turnColumns = Array(row[3...])
            switch row[0] {
            case "duplicate":
                if let existing = Rows.turn(turnColumns) { return .duplicate(existing) }
            case "recovered":
                if let id = row[3].flatMap(UUID.init(uuidString:)) { recovered.append(id) }
            case "started":
                seq = result.int(index, 2)
                created = result.bool(index, 1) == true
            case "history":
                if let turn = Rows.turn(turnColumns) { history.append(turn) }
            default:
                break
            }
        }
        guard let seq else { throw StoreError(.threadBusy, "another turn of this thread is still streaming") }
        return .started(
            StartedTurn(
                turnID: turnID, seq: seq, threadCreated: created, history: history, recoveredTurnIDs: recovered))
    }

    /// Stores the finished reply (status `completed`), bumps the thread's `updated_at` and ends the lease, in one
    /// round trip. Idempotent by turn id.
    ///
    /// A turn already marked `interrupted` (its lease expired, or shutdown gave up on it) is still completed, so a
    /// late full reply is never dropped.
    /// - Returns: true if this call wrote the reply, false if the turn had already finished.
    /// - Throws: `StoreError.notFound` when the turn does not exist for this user.
    @discardableResult
    public func completeTurn(_ completion: TurnCompletion) async throws -> Bool {
        try StoreError.checkText(completion.reply, field: "reply")
        try StoreError.checkText(completion.model, field: "model")
        try StoreError.checkText(completion.stopReason, field: "stopReason")
        return try await finish(
            turnID: completion.turnID, userID: completion.userID, reply: completion.reply, status: .completed,
            error: nil, model: completion.model, stopReason: completion.stopReason, usage: completion.usage,
            firstTokenMs: completion.firstTokenMs, latencyMs: completion.latencyMs, alsoFromInterrupted: true,
            content: completion.content)
    }

    /// Stores a reply that did not finish (status `failed` or `interrupted`, the partial text and the error), bumps
    /// the thread's `updated_at` and ends the lease, in one round trip. Idempotent by turn id.
    /// - Returns: true if this call wrote it, false if the turn had already finished.
    @discardableResult
    public func failTurn(_ failure: TurnFailure) async throws -> Bool {
        guard failure.status == .failed || failure.status == .interrupted else {
            throw StoreError(.invalidArgument, "a failed turn's status must be failed or interrupted")
        }
        try StoreError.checkText(failure.partialReply, field: "partialReply")
        try StoreError.checkText(failure.error, field: "error")
        try StoreError.checkText(failure.model, field: "model")
        return try await finish(
            turnID: failure.turnID, userID: failure.userID, reply: failure.partialReply, status: failure.status,
            error: failure.error, model: failure.model, stopReason: nil, usage: failure.usage,
            firstTokenMs: failure.firstTokenMs, latencyMs: failure.latencyMs, alsoFromInterrupted: false,
            content: failure.content)
    }

    /// Writes a turn's end (reply, status, usage, timings), ends its lease and bumps the thread, in one statement.
    /// Only a `streaming` turn is written (and an `interrupted` one too with `alsoFromInterrupted`), which makes
    /// completing or failing twice a no-op.
    /// - Returns: true if this call wrote it; throws `.notFound` when the turn does not exist for this user.
    private func finish(
        turnID: UUID, userID: UUID, reply: String, status: TurnStatus, error: String?, model: String?,
        stopReason: String?, usage: TokenUsage, firstTokenMs: Int?, latencyMs: Int?, alsoFromInterrupted: Bool,
        content: String?
    ) async throws -> Bool {
        let query: SQLQuery = """
            SELECT * FROM agent_service.finish_turn(\(turnID)::uuid, \(userID)::uuid, \(reply)::text, \(status.rawValue)::text,
                \(error)::text, \(model)::text, \(stopReason)::text, \(usage.inputTokens)::int, \(usage.outputTokens)::int,
                \(usage.cacheCreationInputTokens)::int, \(usage.cacheReadInputTokens)::int, \(firstTokenMs)::int,
                \(latencyMs)::int, \(alsoFromInterrupted)::bool, \(content)::jsonb)
            """
        let result = try await batcher.run(userID, query)
        guard result.bool(0, 1) == true else { throw StoreError(.notFound, "no such turn for this user") }
        return result.bool(0, 0) == true
    }

    /// Extends a streaming turn's lease to now + `lease`, and stores `partialReply` (the reply so far) as a
    /// checkpoint when given: a process that dies loses at most what streamed since its last renewal, and other
    /// instances show the running turn with its text.
    /// - Throws: `StoreError.leaseLost` when the turn is no longer streaming (or does not exist for this user).
    public func renewLease(turnID: UUID, userID: UUID, lease: Duration, partialReply: String? = nil) async throws {
        let seconds = Validation.seconds(lease)
        // A checkpoint Postgres cannot hold (a NUL byte) is skipped; the final write reports it.
        let checkpoint = partialReply.flatMap { (try? StoreError.checkText($0, field: "partialReply")) == nil ? nil : $0 }
        let result = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                """
                UPDATE turns SET lease_until = now() + \(seconds)::float8 * interval '1 second',
                    reply = coalesce(\(checkpoint)::text, reply)
                WHERE id = \(turnID)::uuid AND user_id = \(userID)::uuid AND status = 'streaming'
                """)
        }
        if result.affectedRows == 0 { throw StoreError(.leaseLost, "the turn is no longer streaming") }
    }

    /// Stores the reply of a turn the user stopped (status `cancelled`, stop reason `cancelled`), bumps the thread and
    /// ends the lease, in one round trip. Idempotent by turn id.
    /// - Returns: true if this call wrote it, false if the turn had already finished.
    @discardableResult
    public func cancelTurn(_ stopped: TurnCompletion) async throws -> Bool {
        try StoreError.checkText(stopped.reply, field: "reply")
        try StoreError.checkText(stopped.model, field: "model")
        return try await finish(
            turnID: stopped.turnID, userID: stopped.userID, reply: stopped.reply, status: .cancelled, error: nil,
            model: stopped.model, stopReason: "cancelled", usage: stopped.usage, firstTokenMs: stopped.firstTokenMs,
            latencyMs: stopped.latencyMs, alsoFromInterrupted: false, content: stopped.content)
    }

    /// Marks the user's streaming turn `cancelled` in the database alone, keeping its last checkpointed reply: for a
    /// stop request no running instance answered (the owner stopped, or cannot be reached; if it still runs, its next
    /// lease renewal fails and it stops). Returns the turn as it is now, nil when it does not exist for this user.
    public func cancelStreamingTurn(userID: UUID, turnID: UUID) async throws -> Turn? {
        let results = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                [
                    """
                    WITH done AS (
                        UPDATE turns SET status = 'cancelled', stop_reason = 'cancelled', finished_at = now(),
                            lease_until = NULL
                        WHERE id = \(turnID)::uuid AND user_id = \(userID)::uuid AND status = 'streaming'
                        RETURNING user_id, thread_id
                    )
                    UPDATE threads SET updated_at = now() FROM done
                    WHERE threads.user_id = done.user_id AND threads.id = done.thread_id
                    """,
                    """
                    SELECT \(unsafeRaw: Rows.turnColumns()) FROM turns
                    WHERE id = \(turnID)::uuid AND user_id = \(userID)::uuid
                    """,
                ])
        }
        return results[1].rows.first.flatMap(Rows.turn)
    }

    /// The user's threads, most recently updated first, with `updated_at` before `before` when given.
    public func listThreads(userID: UUID, limit: Int, before: Date?) async throws -> [ThreadSummary] {
        guard limit >= 0 else { throw StoreError(.invalidArgument, "limit must not be negative") }
        let result = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                """
                SELECT th.id, th.title, extract(epoch FROM th.created_at)::text, extract(epoch FROM th.updated_at)::text,
                    (SELECT count(*) FROM turns t WHERE t.user_id = th.user_id AND t.thread_id = th.id)
                FROM threads th
                WHERE th.user_id = \(userID)::uuid AND (\(before)::timestamptz IS NULL OR th.updated_at < \(before)::timestamptz)
                ORDER BY th.updated_at DESC, th.id
                LIMIT \(limit)::int
                """)
        }
        return result.rows.indices.compactMap { row in
            guard let id = result.string(row, 0), let created = result.epochDate(row, 2),
                let updated = result.epochDate(row, 3)
            else { return nil }
            return ThreadSummary(
                id: id, title: result.string(row, 1), createdAt: created, updatedAt: updated,
                turnCount: result.int(row, 4) ?? 0)
        }
    }

    /// The `limit` newest turns with `seq < beforeSeq` (all when nil), oldest first; nil when the thread does not
    /// exist for this user.
    public func turns(userID: UUID, threadID: String, limit: Int, beforeSeq: Int?) async throws -> [Turn]? {
        guard limit >= 0 else { throw StoreError(.invalidArgument, "limit must not be negative") }
        try StoreError.checkText(threadID, field: "threadID")
        let result = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                """
                SELECT \(unsafeRaw: Rows.turnColumns(alias: "t"))
                FROM threads th LEFT JOIN LATERAL (
                    SELECT * FROM turns
                    WHERE turns.user_id = th.user_id AND turns.thread_id = th.id
                        AND (\(beforeSeq)::int IS NULL OR turns.seq < \(beforeSeq)::int)
                    ORDER BY turns.seq DESC LIMIT \(limit)::int
                ) t ON true
                WHERE th.user_id = \(userID)::uuid AND th.id = \(threadID)
                """)
        }
        if result.rows.isEmpty { return nil }
        return result.rows.compactMap(Rows.turn).sorted { $0.seq < $1.seq }
    }

    /// One turn by id, or nil when it does not exist for this user.
    public func turn(userID: UUID, id: UUID) async throws -> Turn? {
        let result = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                "SELECT \(unsafeRaw: Rows.turnColumns()) FROM turns WHERE user_id = \(userID)::uuid AND id = \(id)::uuid")
        }
        return result.rows.first.flatMap(Rows.turn)
    }

    /// The user's turn created with `idempotencyKey`, or nil.
    public func turn(userID: UUID, idempotencyKey: String) async throws -> Turn? {
        try StoreError.checkText(idempotencyKey, field: "idempotencyKey")
        let result = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                """
                SELECT \(unsafeRaw: Rows.turnColumns()) FROM turns
                WHERE user_id = \(userID)::uuid AND idempotency_key = \(idempotencyKey)
                """)
        }
        return result.rows.first.flatMap(Rows.turn)
    }

    /// Deletes the thread and its turns; false when it did not exist for this user.
    ///
    /// - Throws: `StoreError` `.threadBusy` (nothing deleted) while a reply of the thread is streaming under a live
    ///   lease: deleting it would drop the reply being written. A turn whose lease expired (its process died) does not
    ///   block.
    @discardableResult
    public func deleteThread(userID: UUID, threadID: String) async throws -> Bool {
        try StoreError.checkText(threadID, field: "threadID")
        let result = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                """
                WITH busy AS (
                    SELECT EXISTS (
                        SELECT 1 FROM turns WHERE user_id = \(userID)::uuid AND thread_id = \(threadID)
                            AND status = 'streaming' AND lease_until >= now()) AS streaming
                ), deleted AS (
                    DELETE FROM threads WHERE user_id = \(userID)::uuid AND id = \(threadID)
                        AND NOT (SELECT streaming FROM busy)
                    RETURNING 1
                )
                SELECT (SELECT count(*) FROM deleted), (SELECT streaming FROM busy)
                """)
        }
        if result.bool(0, 1) == true {
            throw StoreError(.threadBusy, "a reply of this thread is still streaming")
        }
        return result.int(0, 0) == 1
    }

    /// Marks every `streaming` turn whose lease has expired `interrupted` (its process died or lost the database),
    /// across all users, in one statement; returns their ids. The service's sweeper runs it periodically so that no
    /// turn stays `streaming` (and no Idempotency-Key stays "in progress") after a crash.
    public func sweepExpiredTurns() async throws -> [UUID] {
        let result = try await database.withConnection {
            try $0.query(
                """
                WITH done AS (
                    UPDATE turns SET status = 'interrupted', error = 'the lease expired before the reply finished',
                        finished_at = now(), lease_until = NULL
                    WHERE status = 'streaming' AND lease_until < now()
                    RETURNING id, user_id, thread_id
                ), touched AS (
                    UPDATE threads SET updated_at = now() FROM done
                    WHERE threads.user_id = done.user_id AND threads.id = done.thread_id
                    RETURNING 1
                )
                SELECT id FROM done
                """)
        }
        return result.rows.compactMap { $0[0].flatMap(UUID.init(uuidString:)) }
    }

    /// Marks the user's turn `interrupted` if it is `streaming` with an expired lease, and returns the turn as it is
    /// now (nil when it does not exist for this user).
    public func recoverIfExpired(userID: UUID, turnID: UUID) async throws -> Turn? {
        let results = try await database.withConnection {
            try $0.asUser(
                rowSecurity: rowSecurity, userID,
                [
                    """
                    UPDATE turns SET status = 'interrupted', error = 'the lease expired before the reply finished',
                        finished_at = now(), lease_until = NULL
                    WHERE id = \(turnID)::uuid AND user_id = \(userID)::uuid AND status = 'streaming'
                        AND lease_until < now()
                    """,
                    """
                    SELECT \(unsafeRaw: Rows.turnColumns()) FROM turns
                    WHERE id = \(turnID)::uuid AND user_id = \(userID)::uuid
                    """,
                ])
        }
        return results[1].rows.first.flatMap(Rows.turn)
    }

    /// Marks the given turns `interrupted` with `error` where they are still streaming (at shutdown, for turns that
    /// could not finish), in one round trip.
    public func interruptStreamingTurns(ids: [UUID], error: String) async throws {
        guard !ids.isEmpty else { return }
        try StoreError.checkText(error, field: "error")
        _ = try await database.withConnection {
            try $0.query(
                """
                WITH done AS (
                    UPDATE turns SET status = 'interrupted', error = \(error), finished_at = now(), lease_until = NULL
                    WHERE id = ANY(\(ids)::uuid[]) AND status = 'streaming'
                    RETURNING user_id, thread_id
                )
                UPDATE threads SET updated_at = now() FROM done
                WHERE threads.user_id = done.user_id AND threads.id = done.thread_id
                """)
        }
    }

    /// Checks that the database answers.
    public func ping() async throws {
        try await database.ping()
    }
}

/// Input checks that run before any I/O.
enum Validation {
    static func threadID(_ id: String) throws {
        try StoreError.checkText(id, field: "threadID")
        let length = id.unicodeScalars.count
        guard (1...128).contains(length) else {
            throw StoreError(.invalidArgument, "threadID must be 1 to 128 characters long")
        }
    }

    static func idempotencyKey(_ key: String?) throws {
        guard let key else { return }
        try StoreError.checkText(key, field: "idempotencyKey")
        guard (1...255).contains(key.unicodeScalars.count) else {
            throw StoreError(.invalidArgument, "idempotencyKey must be 1 to 255 characters long")
        }
    }

    /// The first question on one line, cut to 80 characters (and at most 400 code points) with an ellipsis.
    static func title(from question: String) -> String {
        let line = question.split(whereSeparator: \.isNewline).joined(separator: " ")
            .trimmingCharacters(in: .whitespaces)
        var title = ""
        var scalars = 0
        for character in line.prefix(80) {
            scalars += character.unicodeScalars.count
            if scalars > 400 { break }
            title.append(character)
        }
        return title.count < line.count ? title + "…" : title
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// Row decoding shared by the repository's queries.
enum Rows {
    static func turnColumns(alias: String? = nil) -> String {
        let p = alias.map { "\($0)." } ?? ""
        return """
            \(p)id, \(p)user_id, \(p)thread_id, \(p)seq, \(p)question, \(p)reply, \(p)status, \(p)error, \(p)model,
            \(p)stop_reason, \(p)input_tokens, \(p)output_tokens, \(p)cache_creation_input_tokens,
            \(p)cache_read_input_tokens, extract(epoch FROM \(p)started_at)::text, \(p)first_token_ms, \(p)latency_ms,
            extract(epoch FROM \(p)finished_at)::text, \(p)idempotency_key, \(p)user_timezone, \(p)content::text
            """
    }

    static func turn(_ row: [String?]) -> Turn? {
        guard let id = row[0].flatMap(UUID.init(uuidString:)), let user = row[1].flatMap(UUID.init(uuidString:)),
            let thread = row[2], let seq = row[3].flatMap({ Int($0) }), let question = row[4],
            let status = row[6].flatMap(TurnStatus.init(rawValue:)),
            let started = row[14].flatMap({ Double($0) })
        else { return nil }
        func int(_ index: Int) -> Int? { row[index].flatMap { Int($0) } }
        return Turn(
            id: id, userID: user, threadID: thread, seq: seq, question: question, reply: row[5], status: status,
            error: row[7], model: row[8], stopReason: row[9],
            usage: TokenUsage(
                inputTokens: int(10) ?? 0, outputTokens: int(11) ?? 0, cacheCreationInputTokens: int(12) ?? 0,
                cacheReadInputTokens: int(13) ?? 0),
            startedAt: Date(timeIntervalSince1970: started), firstTokenMs: int(15), latencyMs: int(16),
            finishedAt: row[17].flatMap { Double($0) }.map { Date(timeIntervalSince1970: $0) },
            idempotencyKey: row[18], userTimeZone: row[19], content: row.count > 20 ? row[20] : nil)
    }
}
