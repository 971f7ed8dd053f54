import Claude
import Foundation
import Logging
import ThreadStore

/// A question for a thread, already validated.
struct TurnInput: Sendable {
    var userID: UUID
    /// nil starts a new thread with a generated id.
    var threadID: String?
    var question: String
    var timeZone: TimeZone
    var idempotencyKey: String?
    /// Overrides the configured model for this turn (used by `replay --rerun --model`).
    var model: String?
}

/// Why a turn could not be started. Nothing was streamed yet, so transports answer with a plain error.
enum AgentError: Error, Sendable {
    /// Another turn is streaming on this thread.
    case threadBusy
    /// The `Idempotency-Key` belongs to a turn that is still streaming.
    case turnInProgress(turnID: UUID)
    /// The service is shutting down and takes no new turns.
    case shuttingDown
    /// The database could not be used.
    case storeUnavailable(any Error)
    /// The input cannot be stored (e.g. a NUL byte); names the field.
    case invalidInput(field: String, message: String)
    /// Too many turns run already (`perUser`: this user's; else the whole service's).
    case tooManyTurns(perUser: Bool, limit: Int)
    /// The `Idempotency-Key` belongs to a turn with another question or thread.
    case idempotencyKeyReused(turnID: UUID)
}

/// The agent layer: one turn of DESIGN.md, independent of HTTP so the CLI runs the very same code.
///
/// `startTurn` does the work that can still fail cleanly (begin the turn in the database) and returns a handle;
/// the rest (stream from Claude, relay, persist) runs under the `TurnSupervisor`, detached from whoever listens.
final class Agent: Sendable {
    let repository: ThreadRepository
    let claude: ClaudeClient
    let prompt: PromptBuilder
    let supervisor: TurnSupervisor
    let metrics: ServiceMetrics
    let logger: Logger
    /// How long to keep retrying the final write of a turn when the database is failing.
    let persistRetry: Duration
    let historyTurns: Int
    let lease: Duration
    /// Where turn endings go when the database cannot take them in time.
    let spool: ReplySpool?
    /// How long a turn cancelled at shutdown keeps trying to store its ending before spooling it.
    let shutdownPersistBudget: Duration

    init(
        repository: ThreadRepository, claude: ClaudeClient, prompt: PromptBuilder, supervisor: TurnSupervisor,
        metrics: ServiceMetrics, logger: Logger, persistRetry: Duration, historyTurns: Int,
        lease: Duration = .seconds(120), spool: ReplySpool? = nil, shutdownPersistBudget: Duration = .seconds(2)
    ) {
        self.spool = spool
        self.shutdownPersistBudget = shutdownPersistBudget
        self.repository = repository
        self.claude = claude
        self.prompt = prompt
        self.supervisor = supervisor
        self.metrics = metrics
        self.logger = logger
        self.persistRetry = persistRetry
        self.historyTurns = historyTurns
        self.lease = lease
    }

    /// Stores the question as a `streaming` turn and starts streaming the reply.
    ///
    /// A repeated `idempotencyKey` returns the earlier turn instead: replayed from the database when it has
    /// finished, `turnInProgress` while it is still streaming.
    func startTurn(_ input: TurnInput) async throws(AgentError) -> TurnHandle {
        do throws(TurnSupervisor.Refusal) {
            try supervisor.admit(userID: input.userID)
        } catch {
            switch error {
            case .draining: throw .shuttingDown
            case .tooManyTurns(let limit):
                metrics.turnRefused(reason: "max_active_turns")
                throw .tooManyTurns(perUser: false, limit: limit)
            case .tooManyTurnsForUser(let limit):
                metrics.turnRefused(reason: "max_active_turns_per_user")
                throw .tooManyTurns(perUser: true, limit: limit)
            }
        }
        // The admission ends with the turn (launch hands it over) or here, on every other way out.
        var launched = false
        defer { if !launched { supervisor.release(userID: input.userID) } }
        let threadID = input.threadID ?? UUID().uuidString.lowercased()
        let begun: BeginTurnResult
        do {
            begun = try await repository.beginTurn(
                BeginTurnRequest(
                    userID: input.userID, threadID: threadID, question: input.question,
                    idempotencyKey: input.idempotencyKey, historyLimit: historyTurns, lease: lease,
                    userTimeZone: input.timeZone.identifier))
        } catch let error as StoreError {
            throw Self.agentError(from: error)
        } catch {
            throw .storeUnavailable(error)
        }
        switch begun {
        case .duplicate(var turn):
            // A key names one request: the same question (and thread, when the retry names one).
            guard turn.question == input.question, input.threadID == nil || input.threadID == turn.threadID else {
                throw .idempotencyKeyReused(turnID: turn.id)
            }
            if turn.status == .streaming {
                // Its process may have died: a turn whose lease expired is recovered now rather than at the next sweep.
                turn = (try? await repository.recoverIfExpired(userID: input.userID, turnID: turn.id)) ?? turn
            }
            return try replay(turn)
        case .started(let started):
            for recovered in started.recoveredTurnIDs {
                logger.notice(
                    "recovered a turn whose lease expired (its process stopped); marked interrupted",
                    metadata: ["turn_id": "\(recovered)", "thread_id": "\(threadID)"])
            }
            let request = prompt.request(
                history: started.history, question: input.question, timeZone: input.timeZone, now: Date(),
                userID: input.userID)
            var effective = request
            if let model = input.model { effective.model = model }
            let context = TurnContext(
                userID: input.userID, threadID: threadID, turnID: started.turnID, request: effective)
            launched = true
            guard
                let events = supervisor.launch(
                    turnID: started.turnID, userID: input.userID,
                    operation: { slot in await self.run(context, slot: slot) })
            else {
                // Raced with shutdown after the row was written: leave nothing `streaming` behind.
                _ = try? await repository.failTurn(
                    TurnFailure(
                        turnID: started.turnID, userID: input.userID, status: .interrupted, partialReply: "",
                        error: "service shutting down", model: effective.model, usage: TokenUsage(),
                        firstTokenMs: nil, latencyMs: nil))
                throw .shuttingDown
            }
            return TurnHandle(threadID: threadID, turnID: started.turnID, events: events)
        }
    }

    private static func agentError(from error: StoreError) -> AgentError {
        if error.code == .threadBusy { return .threadBusy }
        if error.code == .invalidText { return .invalidInput(field: "question", message: error.message) }
        return .storeUnavailable(error)
    }

    /// The events of a turn that already exists, for a repeated idempotency key.
    private func replay(_ turn: Turn) throws(AgentError) -> TurnHandle {
        let (events, continuation) = AsyncStream<TurnEvent>.makeStream()
        switch turn.status {
        case .streaming:
            throw .turnInProgress(turnID: turn.id)
        case .completed:
            let reply = turn.reply ?? ""
            if !reply.isEmpty { continuation.yield(.chunk(reply)) }
            continuation.yield(
                .done(
                    TurnOutcome(
                        threadID: turn.threadID, turnID: turn.id, reply: reply, usage: turn.usage, model: turn.model,
                        stopReason: turn.stopReason, firstTokenMs: turn.firstTokenMs, latencyMs: turn.latencyMs,
                        replayed: true)))
        case .failed, .interrupted:
            if let reply = turn.reply, !reply.isEmpty { continuation.yield(.chunk(reply)) }
            continuation.yield(
                .failed(
                    TurnFailureInfo(
                        type: turn.status == .failed ? "turn_failed" : "interrupted",
                        message:
                            "This Idempotency-Key belongs to a turn that did not complete (\(turn.error ?? "unknown error")); "
                            + "send the question again with a new key.",
                        retryable: true)))
        }
        continuation.finish()
        return TurnHandle(threadID: turn.threadID, turnID: turn.id, events: events)
    }

    private struct TurnContext: Sendable {
        var userID: UUID
        var threadID: String
        var turnID: UUID
        var request: MessagesRequest
    }

    /// Streams one reply and persists it. Runs under the supervisor, never under a request.
    private func run(_ context: TurnContext, slot: TurnSupervisor.Slot) async {
        let clock = ContinuousClock()
        let start = clock.now
        var accumulator = MessageAccumulator()
        var firstTokenMs: Int?
        metrics.streamStarted()
        defer { metrics.streamEnded(duration: clock.now - start) }
        var log = logger
        log[metadataKey: "turn_id"] = "\(context.turnID)"
        log[metadataKey: "thread_id"] = "\(context.threadID)"

        do {
            for try await event in claude.stream(context.request) {
                accumulator.apply(event)
                if case .textDelta(_, let text) = event, !text.isEmpty {
                    if firstTokenMs == nil {
                        let elapsed = clock.now - start
                        firstTokenMs = Self.milliseconds(elapsed)
                        metrics.firstChunk(after: elapsed)
                    }
                    slot.send(.chunk(text))
                }
            }
            guard accumulator.sawMessageStop else {
                throw ClaudeError(kind: .truncated, message: "the stream ended before message_stop")
            }
        } catch {
            let cancelled = Task.isCancelled
            let failure = slot.stopReason ?? Self.failureInfo(for: error, cancelled: cancelled)
            metrics.upstreamError(type: failure.type)
            let latency = Self.milliseconds(clock.now - start)
            let stored = TurnFailure(
                turnID: context.turnID, userID: context.userID, status: cancelled ? .interrupted : .failed,
                partialReply: accumulator.text, error: "\(failure.type): \(failure.message)",
                model: accumulator.model ?? context.request.model, usage: Self.usage(accumulator.usage),
                firstTokenMs: firstTokenMs, latencyMs: latency)
            log.warning(
                "turn failed after \(accumulator.text.unicodeScalars.count) characters; partial reply stored",
                metadata: ["error_type": "\(failure.type)", "error": "\(String(reflecting: error))"])
            _ = await persist(
                ReplySpool.Entry(
                    kind: stored.status == .failed ? .failed : .interrupted, turnID: stored.turnID, userID: stored.userID,
                    reply: stored.partialReply, model: stored.model, stopReason: nil, error: stored.error,
                    usage: stored.usage, firstTokenMs: stored.firstTokenMs, latencyMs: stored.latencyMs),
                log: log)
            metrics.turnFinished(outcome: cancelled ? "interrupted" : "failed")
            slot.send(.failed(failure))
            return
        }

        let latency = Self.milliseconds(clock.now - start)
        let usage = Self.usage(accumulator.usage)
        let completion = TurnCompletion(
            turnID: context.turnID, userID: context.userID, reply: accumulator.text,
            model: accumulator.model ?? context.request.model, stopReason: accumulator.stopReason, usage: usage,
            firstTokenMs: firstTokenMs, latencyMs: latency)
        metrics.tokens(usage)
        let persisted = await persist(
            ReplySpool.Entry(
                kind: .completed, turnID: completion.turnID, userID: completion.userID, reply: completion.reply,
                model: completion.model, stopReason: completion.stopReason, error: nil, usage: completion.usage,
                firstTokenMs: completion.firstTokenMs, latencyMs: completion.latencyMs),
            log: log)
        if persisted == .written {
            metrics.turnFinished(outcome: "completed")
            slot.send(
                .done(
                    TurnOutcome(
                        threadID: context.threadID, turnID: context.turnID, reply: accumulator.text, usage: usage,
                        model: completion.model, stopReason: completion.stopReason, firstTokenMs: firstTokenMs,
                        latencyMs: latency)))
        } else if persisted == .gone {
            metrics.turnFinished(outcome: "thread_deleted")
            slot.send(
                .failed(
                    TurnFailureInfo(
                        type: "thread_deleted", message: "The thread was deleted while this reply was streaming.",
                        retryable: false)))
        } else if persisted == .spooled {
            metrics.turnFinished(outcome: "spooled")
            slot.send(
                .failed(
                    TurnFailureInfo(
                        type: "persistence_delayed",
                        message:
                            "The reply was received, but the database is unavailable; it is kept by the service and stored when the database is back.",
                        retryable: false)))
        } else {
            metrics.turnFinished(outcome: "persist_failed")
            slot.send(
                .failed(
                    TurnFailureInfo(
                        type: "persistence_failed",
                        message: "The reply was received but could not be saved; the database is unavailable.",
                        retryable: true)))
        }
    }

    /// The longest one write attempt is waited for (the pool's own statement deadline is shorter).
    static let attemptTimeout = Duration.seconds(12)

    /// How a final write ended.
    enum PersistOutcome {
        case written
        /// The turn no longer exists (its thread was deleted): nothing to write to.
        case gone
        /// Saved to the local spool; written when the database answers again.
        case spooled
        case failed
    }

    /// Writes a turn's ending, retrying transient failures with backoff for up to `persistRetry`.
    ///
    /// Every attempt has a deadline (a stalled database cannot hold the turn), and in a cancelled turn (shutdown past
    /// its grace period) the remaining budget shrinks to `shutdownPersistBudget`. An ending that cannot be written in
    /// time is spooled to disk and written later (`ReplySpool`), so a completed reply is not lost.
    private func persist(_ entry: ReplySpool.Entry, log: Logger) async -> PersistOutcome {
        var deadline = ContinuousClock.now + persistRetry
        var delay = Duration.milliseconds(100)
        var attempt = 1
        while true {
            let cancelled = Task.isCancelled
            if cancelled { deadline = min(deadline, .now + shutdownPersistBudget) }
            let remaining = min(max(deadline - .now, .milliseconds(200)), Self.attemptTimeout)
            // Before shutdown cancels the turn, a cancel ends the wait at once; after, the shortened deadline rules.
            let result = await withDeadline(remaining, stopWaitingOnCancel: !cancelled) {
                try await ReplySpool.write(entry, to: self.repository)
            }
            switch result {
            case .success?:
                if attempt > 1 { log.notice("turn persisted after \(attempt) attempts") }
                return .written
            case .failure(let error as StoreError)? where error.code == .notFound:
                log.notice("the turn's thread was deleted while it streamed; nothing to store")
                return .gone
            case .failure(let error)? where !((error as? StoreError)?.isTransient ?? false):
                log.error(
                    "the database refused the turn's ending; it is not stored",
                    metadata: ["error": "\(String(reflecting: error))"])
                return .failed
            case .failure, nil:
                let reason = result.map { "\($0)" } ?? "no answer within \(remaining)"
                if Task.isCancelled { deadline = min(deadline, .now + shutdownPersistBudget) }
                guard ContinuousClock.now + delay < deadline else {
                    if let spool, spool.save(entry) {
                        log.error(
                            "could not store the turn after \(attempt) attempt(s); spooled to \(spool.directory.path), it is written when the database answers",
                            metadata: ["reason": "\(reason)"])
                        metrics.turnSpooled()
                        return .spooled
                    }
                    log.error(
                        "giving up on persisting the turn after \(attempt) attempt(s); the reply is lost",
                        metadata: ["reason": "\(reason)"])
                    return .failed
                }
                log.warning(
                    "persisting the turn failed (attempt \(attempt)); retrying in \(delay)", metadata: ["reason": "\(reason)"])
                await sleepIgnoringCancellation(delay)
                delay = min(delay * 2, .seconds(2))
                attempt += 1
            }
        }
    }

    static func failureInfo(for error: any Error, cancelled: Bool) -> TurnFailureInfo {
        if cancelled || error is CancellationError {
            return TurnFailureInfo(
                type: "interrupted", message: "The service is shutting down; the partial reply was saved.",
                retryable: true)
        }
        guard let error = error as? ClaudeError else {
            return TurnFailureInfo(
                type: "internal_error", message: "The reply could not be completed.", retryable: true)
        }
        switch error.kind {
        case .truncated:
            return TurnFailureInfo(
                type: "upstream_truncated", message: "Claude's stream ended before the reply was complete.",
                retryable: true)
        case .stalled:
            return TurnFailureInfo(
                type: "upstream_stalled", message: "Claude's stream stopped sending data.", retryable: true)
        case .connection:
            return TurnFailureInfo(
                type: "upstream_unavailable", message: "Claude could not be reached.", retryable: true)
        case .cancelled:
            return TurnFailureInfo(
                type: "interrupted", message: "The service is shutting down; the partial reply was saved.",
                retryable: true)
        default:
            return TurnFailureInfo(
                type: error.type ?? "api_error", message: error.message, retryable: error.isRetryable)
        }
    }

    static func usage(_ usage: Usage) -> TokenUsage {
        TokenUsage(
            inputTokens: usage.inputTokens, outputTokens: usage.outputTokens,
            cacheCreationInputTokens: usage.cacheCreationInputTokens, cacheReadInputTokens: usage.cacheReadInputTokens)
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds) * 1_000 + Int(duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
