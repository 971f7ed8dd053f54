import Claude
import ThreadStore

/// The lifecycle of one turn, from its first upstream request to the final frame, as a pure value: events in, actions
/// out (in the manner of postgres-nio's `ExtendedQueryStateMachine`).
///
/// It owns every decision of a turn: which text is relayed (exactly the text that will be stored), when Claude is
/// asked again (only before anything was delivered, by ``RetryPolicy``), which status the ending is stored with, how
/// a failing final write is retried (backoff within a deadline that shutdown shortens) and when it is spooled
/// instead, and which frame ends the stream. It does no I/O and reads no clock: the executor (`TurnRun`) passes the
/// time and the jitter in, performs the actions and feeds their results back as events.
///
/// ```
/// streaming ──message_stop──▶ persisting(completed) ──written──▶ finished (done)
///     │ ╲──message_stop, stop_reason tool_use, rounds left──▶ runningTools ──results──▶ streaming (the next step)
///     │ ╲──failed, nothing delivered, budget left──▶ awaitingUpstreamRetry ──due──▶ streaming
///     ├──failed──▶ persisting(failed)          persisting ──transient failure──▶ awaitingPersistRetry ──due──▶ persisting
///     ├──cancel──▶ persisting(cancelled)       persisting ──deadline──▶ spooling ──▶ finished
///     ├──shutdown──▶ persisting(interrupted)
///     └──lease lost──▶ finished (error)
/// ```
struct TurnMachine: Sendable {
    typealias Instant = ContinuousClock.Instant

    struct Configuration: Sendable {
        /// Retries of a request that failed before anything was delivered.
        var upstreamRetry = RetryPolicy()
        /// How long a failing final write is retried before the ending is spooled.
        var persistRetryFor = Duration.seconds(30)
        var persistFirstBackoff = Duration.milliseconds(100)
        var persistMaxBackoff = Duration.seconds(2)
        /// The longest one write attempt is waited for.
        var attemptTimeout = Duration.seconds(12)
        /// The shortest wait given to an attempt, even when the deadline is closer.
        var minimumAttemptTimeout = Duration.milliseconds(200)
        /// What is left of the write deadline once shutdown has begun.
        var shutdownBudget = Duration.seconds(2)
        /// How many times one turn may run tools (`MAX_TOOL_ROUNDS`); a step asking for more ends the turn with stop
        /// reason `max_tool_rounds`.
        var maxToolRounds = 8
    }

    enum Event: Sendable {
        /// The turn's row exists; streaming may start.
        case begun
        /// One event of the current upstream attempt.
        case upstream(MessageStreamEvent)
        /// The upstream stream ended without an error.
        case upstreamEnded
        /// The upstream attempt failed; `jitter` (0..<1) shortens the backoff.
        case upstreamFailed(ClaudeError, jitter: Double)
        /// The wait before the next upstream attempt is over.
        case upstreamRetryDue
        /// The final write answered.
        case persisted(PersistResult)
        /// The final write failed: `transient` failures are retried.
        case persistFailed(transient: Bool)
        /// The wait before the next write attempt is over.
        case persistRetryDue
        /// The write deadline (shortened by shutdown) has passed with the write still unanswered.
        case persistDeadlinePassed
        /// The ending was saved to the local spool (or the disk failed too).
        case spooled(Bool)
        /// The tools of the running round answered (in the order they were asked for).
        case toolsFinished([ToolResultBlock])
        /// The user pressed Stop.
        case cancelRequested
        /// The client that started the turn went away (the turn goes on; it can be resumed).
        case clientGone
        /// Another instance recovered the turn or its thread was deleted: the row is no longer this turn's to write.
        case leaseLost
        /// The shutdown grace period is over.
        case shutdown
    }

    enum PersistResult: Sendable, Equatable {
        /// Stored (or found already stored: writes are idempotent by turn id).
        case written
        /// The turn no longer exists: its thread was deleted while it streamed.
        case gone
    }

    /// How the stream ends, once the ending is stored (or could not be).
    enum Final: Sendable, Equatable {
        /// `done`, with the stop reason to show (`cancelled` for a stopped turn, else Claude's).
        case done(stopReason: String?)
        case error(TurnFailureInfo)
    }

    enum Action: Sendable, Equatable {
        /// Ask Claude, with the turn's steps so far (assistant messages and tool results) after the prompt.
        case startUpstream(attempt: Int, steps: [MessageParam])
        case scheduleUpstreamRetry(after: Duration)
        /// Text to deliver, exactly as it is appended to the reply.
        case relay(String)
        /// Tool activity or thinking to show listeners (never part of the reply text).
        case announce(TurnActivity)
        case stopUpstream
        /// Run these tool calls (in parallel) and report `toolsFinished`.
        case runTools([ToolCall])
        /// Abandon the running tool calls.
        case stopTools
        /// Write the ending (status and, for failures, the error) with this attempt's deadline.
        case persist(Ending, timeout: Duration)
        case schedulePersistRetry(after: Duration)
        case schedulePersistDeadline(after: Duration)
        case spool(Ending)
        /// Send the final frame; `outcome` labels the metric. Nothing follows.
        case finish(Final, outcome: String)
    }

    /// What the turn stores.
    struct Ending: Sendable, Equatable {
        var status: TurnStatus
        /// The error shown to the client (and stored) for `failed` and `interrupted`.
        var failure: TurnFailureInfo?
    }

    enum State: Sendable, Equatable {
        case initial
        case streaming(attempt: Int, delivered: Bool)
        /// `attempt` is the number of the next attempt.
        case awaitingUpstreamRetry(attempt: Int)
        case persisting(Persisting)
        case awaitingPersistRetry(Persisting)
        /// Tools of round `round` (1-based) are running.
        case runningTools(round: Int)
        case spooling(Ending)
        case finished
    }

    struct Persisting: Sendable, Equatable {
        var ending: Ending
        var attempt: Int
        var deadline: Instant
    }

    let configuration: Configuration
    private(set) var state = State.initial
    /// The current step of the reply: its blocks, usage, model, stop reason.
    private(set) var accumulator = MessageAccumulator()
    /// The reply's visible text so far, every step's (exactly what was relayed).
    private(set) var reply = ""
    /// The finished steps of this turn: assistant messages and the user messages with their tool results.
    private(set) var steps: [MessageParam] = []
    /// Usage of the finished steps (the current step's is in `accumulator`).
    private var earlierUsage = Usage()
    /// Tool rounds run so far.
    private(set) var toolRounds = 0
    /// Overrides Claude's stop reason (`max_tool_rounds`).
    private var stopReasonOverride: String?
    /// Set once shutdown has begun; the write deadline is then at most `shutdownBudget` away.
    private(set) var shutdownDeadline: Instant?

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    mutating func handle(_ event: Event, at now: Instant) -> [Action] {
        if case .shutdown = event, shutdownDeadline == nil {
            shutdownDeadline = now + configuration.shutdownBudget
        }
        switch state {
        case .initial:
            switch event {
            case .begun:
                state = .streaming(attempt: 1, delivered: false)
                return [.startUpstream(attempt: 1, steps: [])]
            case .cancelRequested:
                return beginPersist(Ending(status: .cancelled), at: now)
            case .shutdown:
                return beginPersist(Self.interrupted, at: now)
            case .leaseLost:
                state = .finished
                return [.finish(.error(Self.leaseLostInfo), outcome: "lease_lost")]
            default:
                return []
            }

        case .streaming(let attempt, let delivered):
            switch event {
            case .upstream(let upstream):
                state = .streaming(attempt: attempt, delivered: true)
                let before = accumulator.text.utf8.count
                accumulator.apply(upstream)
                var actions: [Action] = []
                // Relayed is what the reply took in: the delta of a text block (never a thinking or tool block's).
                if case .textDelta(_, let delta) = upstream, accumulator.text.utf8.count > before {
                    // A step's text after an earlier step's starts a new paragraph; the break is part of the reply.
                    let piece = before == 0 && !reply.isEmpty && !reply.hasSuffix("\n") ? "\n\n" + delta : delta
                    reply += piece
                    actions.append(.relay(piece))
                }
                if case .thinkingDelta(_, let thinking) = upstream, !thinking.isEmpty {
                    actions.append(.announce(.thinking(thinking)))
                }
                if case .messageStop = upstream {
                    actions += endStep(at: now)
                }
                return actions
            case .upstreamEnded:
                return beginPersist(
                    Self.failed(ClaudeError(kind: .truncated, message: "the stream ended before message_stop")),
                    at: now)
            case .upstreamFailed(let error, let jitter):
                if error.kind == .cancelled { return beginPersist(Self.interrupted, at: now) }
                let retries = attempt - 1
                if !delivered, error.isRetryable, configuration.upstreamRetry.hasBudget(retriesSoFar: retries) {
                    state = .awaitingUpstreamRetry(attempt: attempt + 1)
                    accumulator = MessageAccumulator()  // this step's; earlier steps are kept
                    let delay = configuration.upstreamRetry.delay(
                        retryAfter: error.retryAfter, retriesSoFar: retries, jitter: jitter)
                    return [.scheduleUpstreamRetry(after: delay)]
                }
                return beginPersist(Self.failed(error), at: now)
            case .cancelRequested:
                return [.stopUpstream] + beginPersist(Ending(status: .cancelled), at: now)
            case .shutdown:
                return [.stopUpstream] + beginPersist(Self.interrupted, at: now)
            case .leaseLost:
                state = .finished
                return [.stopUpstream, .finish(.error(Self.leaseLostInfo), outcome: "lease_lost")]
            case .begun, .upstreamRetryDue, .persisted, .persistFailed, .persistRetryDue, .persistDeadlinePassed,
                .spooled, .clientGone, .toolsFinished:
                return []
            }

        case .runningTools:
            switch event {
            case .toolsFinished(let results):
                steps.append(MessageParam(role: .user, blocks: results.map(ContentBlock.toolResult)))
                state = .streaming(attempt: 1, delivered: false)
                return [.startUpstream(attempt: 1, steps: steps)]
            case .cancelRequested:
                return [.stopTools] + beginPersist(Ending(status: .cancelled), at: now)
            case .shutdown:
                return [.stopTools] + beginPersist(Self.interrupted, at: now)
            case .leaseLost:
                state = .finished
                return [.stopTools, .finish(.error(Self.leaseLostInfo), outcome: "lease_lost")]
            default:
                return []
            }

        case .awaitingUpstreamRetry(let attempt):
            switch event {
            case .upstreamRetryDue:
                state = .streaming(attempt: attempt, delivered: false)
                return [.startUpstream(attempt: attempt, steps: steps)]
            case .cancelRequested:
                return beginPersist(Ending(status: .cancelled), at: now)
            case .shutdown:
                return beginPersist(Self.interrupted, at: now)
            case .leaseLost:
                state = .finished
                return [.finish(.error(Self.leaseLostInfo), outcome: "lease_lost")]
            default:
                return []
            }

        case .persisting(var persisting):
            switch event {
            case .persisted(let result):
                state = .finished
                return [finish(persisting.ending, result)]
            case .persistFailed(let transient):
                guard transient else {
                    state = .finished
                    return [finishUnstored(persisting.ending)]
                }
                let delay = backoff(after: persisting.attempt)
                guard now + delay < persisting.deadline else { return spool(persisting.ending) }
                state = .awaitingPersistRetry(persisting)
                return [.schedulePersistRetry(after: delay)]
            case .shutdown:
                return shorten(&persisting, at: now, retrying: false)
            case .persistDeadlinePassed:
                return spool(persisting.ending)
            default:
                return []
            }

        case .awaitingPersistRetry(var persisting):
            switch event {
            case .persistRetryDue:
                persisting.attempt += 1
                state = .persisting(persisting)
                return [.persist(persisting.ending, timeout: attemptTimeout(until: persisting.deadline, at: now))]
            case .shutdown:
                return shorten(&persisting, at: now, retrying: true)
            case .persistDeadlinePassed:
                return spool(persisting.ending)
            default:
                return []
            }

        case .spooling(let ending):
            guard case .spooled(let saved) = event else { return [] }
            state = .finished
            return [saved ? finishSpooled(ending) : finishUnstored(ending)]

        case .finished:
            return []
        }
    }

    // MARK: Steps and tools

    /// The current step is complete: run the tools it asks for, or end the turn.
    private mutating func endStep(at now: Instant) -> [Action] {
        let calls = accumulator.toolCalls
        guard accumulator.stopReason == "tool_use", !calls.isEmpty else {
            return beginPersist(Ending(status: .completed), at: now)
        }
        guard toolRounds < configuration.maxToolRounds else {
            stopReasonOverride = "max_tool_rounds"
            return beginPersist(Ending(status: .completed), at: now)
        }
        toolRounds += 1
        steps.append(MessageParam(role: .assistant, blocks: accumulator.contentBlocks))
        earlierUsage = Self.sum(earlierUsage, accumulator.usage)
        accumulator = MessageAccumulator()
        state = .runningTools(round: toolRounds)
        let announced = calls.map { call -> Action in
            .announce(.toolCall(id: call.block.id, name: call.block.name, input: call.block.input.canonicalText))
        }
        return announced + [.runTools(calls)]
    }

    /// Usage of the whole turn: every step's tokens added up.
    var usage: Usage { Self.sum(earlierUsage, accumulator.usage) }

    /// The stop reason to store and show: Claude's last, or `max_tool_rounds`.
    var stopReason: String? { stopReasonOverride ?? accumulator.stopReason }

    /// What the turn stores as its full content (`Turn.content`): every step, the current one as far as it got; nil
    /// when the reply is text alone (then `reply` is all of it).
    var content: [MessageParam]? {
        var all = steps
        let current = accumulator.contentBlocks
        if !current.isEmpty { all.append(MessageParam(role: .assistant, blocks: current)) }
        let textOnly = all.allSatisfy { message in
            message.role == .assistant
                && message.blocks.allSatisfy {
                    if case .text = $0 { return true }
                    return false
                }
        }
        return textOnly ? nil : all
    }

    private static func sum(_ a: Usage, _ b: Usage) -> Usage {
        Usage(
            inputTokens: a.inputTokens + b.inputTokens, outputTokens: a.outputTokens + b.outputTokens,
            cacheCreationInputTokens: a.cacheCreationInputTokens + b.cacheCreationInputTokens,
            cacheReadInputTokens: a.cacheReadInputTokens + b.cacheReadInputTokens)
    }

    // MARK: Writing the ending

    private mutating func beginPersist(_ ending: Ending, at now: Instant) -> [Action] {
        var deadline = now + configuration.persistRetryFor
        if let shutdownDeadline { deadline = min(deadline, shutdownDeadline) }
        let persisting = Persisting(ending: ending, attempt: 1, deadline: deadline)
        state = .persisting(persisting)
        var actions: [Action] = [.persist(ending, timeout: attemptTimeout(until: deadline, at: now))]
        if let shutdownDeadline { actions.append(.schedulePersistDeadline(after: max(shutdownDeadline - now, .zero))) }
        return actions
    }

    private mutating func spool(_ ending: Ending) -> [Action] {
        state = .spooling(ending)
        return [.spool(ending)]
    }

    /// Shutdown while the ending is being written: the deadline moves to the shutdown budget, with a timer for it
    /// (an attempt in flight may have been given longer).
    private mutating func shorten(_ persisting: inout Persisting, at now: Instant, retrying: Bool) -> [Action] {
        guard let shutdownDeadline, shutdownDeadline < persisting.deadline else { return [] }
        persisting.deadline = shutdownDeadline
        state = retrying ? .awaitingPersistRetry(persisting) : .persisting(persisting)
        return [.schedulePersistDeadline(after: max(shutdownDeadline - now, .zero))]
    }

    private func attemptTimeout(until deadline: Instant, at now: Instant) -> Duration {
        min(max(deadline - now, configuration.minimumAttemptTimeout), configuration.attemptTimeout)
    }

    /// The wait after write attempt `attempt` failed: 100 ms doubling, at most 2 s.
    private func backoff(after attempt: Int) -> Duration {
        var delay = configuration.persistFirstBackoff
        for _ in 1..<max(attempt, 1) { delay = min(delay * 2, configuration.persistMaxBackoff) }
        return min(delay, configuration.persistMaxBackoff)
    }

    private func finish(_ ending: Ending, _ result: PersistResult) -> Action {
        if result == .gone {
            return .finish(
                .error(
                    TurnFailureInfo(
                        type: "thread_deleted", message: "The thread was deleted while this reply was streaming.",
                        retryable: false)), outcome: "thread_deleted")
        }
        switch ending.status {
        case .completed: return .finish(.done(stopReason: stopReason), outcome: "completed")
        case .cancelled: return .finish(.done(stopReason: "cancelled"), outcome: "cancelled")
        default: return .finish(.error(ending.failure ?? Self.internalFailure), outcome: ending.status.rawValue)
        }
    }

    private func finishSpooled(_ ending: Ending) -> Action {
        switch ending.status {
        case .completed:
            return .finish(.error(Self.persistenceDelayed), outcome: "spooled")
        case .cancelled: return .finish(.done(stopReason: "cancelled"), outcome: "spooled")
        default: return .finish(.error(ending.failure ?? Self.internalFailure), outcome: "spooled")
        }
    }

    private func finishUnstored(_ ending: Ending) -> Action {
        switch ending.status {
        case .completed, .cancelled:
            return .finish(.error(Self.persistenceFailed), outcome: "persist_failed")
        default:
            return .finish(.error(ending.failure ?? Self.internalFailure), outcome: "persist_failed")
        }
    }

    // MARK: Failures as clients see them

    static let interrupted = Ending(
        status: .interrupted,
        failure: TurnFailureInfo(
            type: "interrupted", message: "The service is shutting down; the partial reply was saved.",
            retryable: true))

    static let persistenceDelayed = TurnFailureInfo(
        type: "persistence_delayed",
        message:
            "The reply was received, but the database is unavailable; it is kept by the service and stored when the database is back.",
        retryable: false)

    static let persistenceFailed = TurnFailureInfo(
        type: "persistence_failed",
        message: "The reply was received but could not be saved; the database is unavailable.", retryable: true)

    static let leaseLostInfo = TurnFailureInfo(
        type: "lease_lost",
        message: "The reply was stopped: this turn no longer holds its thread (it was deleted or recovered).",
        retryable: true)

    static let internalFailure = TurnFailureInfo(
        type: "internal_error", message: "The reply could not be completed.", retryable: true)

    static func failed(_ error: ClaudeError) -> Ending {
        Ending(status: .failed, failure: failureInfo(for: error))
    }

    static func failureInfo(for error: ClaudeError) -> TurnFailureInfo {
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
            return interrupted.failure!
        default:
            return TurnFailureInfo(type: error.type ?? "api_error", message: error.message, retryable: error.isRetryable)
        }
    }
}


