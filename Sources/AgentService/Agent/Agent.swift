import Claude
import Foundation
import Logging
import ThreadStore
import Tools

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
/// `startTurn` does the work that can still fail cleanly (admission, then begin the turn in the database) and returns
/// a handle; the rest (stream from Claude, relay, persist) is a `TurnRun` under the `TurnSupervisor`, detached from
/// whoever listens.
final class Agent: Sendable {
    let repository: ThreadRepository
    let claude: ClaudeClient
    let prompt: PromptBuilder
    let supervisor: TurnSupervisor
    let metrics: ServiceMetrics
    let logger: Logger
    let historyTurns: Int
    let lease: Duration
    /// Where turn endings go when the database cannot take them in time.
    let spool: ReplySpool?
    /// The turn's rules: upstream retries, the final write's retries, deadlines and shutdown budget.
    let turnRules: TurnMachine.Configuration
    /// Reaches turns running on other instances (resume, stop); nil in a single-process setting without one.
    let relay: TurnRelay?
    /// How often idle streams get a keep-alive.
    let pingInterval: Duration
    /// The tools Claude may call, and how long and how much of a call's output is taken.
    let tools: ToolRegistry
    let toolDeadline: Duration
    let toolOutputLimit: Int

    init(
        repository: ThreadRepository, claude: ClaudeClient, prompt: PromptBuilder, supervisor: TurnSupervisor,
        metrics: ServiceMetrics, logger: Logger, historyTurns: Int, lease: Duration = .seconds(120),
        spool: ReplySpool? = nil, turnRules: TurnMachine.Configuration, relay: TurnRelay? = nil,
        pingInterval: Duration = .seconds(15), tools: ToolRegistry = .empty, toolDeadline: Duration = .seconds(60),
        toolOutputLimit: Int = 100_000
    ) {
        self.tools = tools
        self.toolDeadline = toolDeadline
        self.toolOutputLimit = toolOutputLimit
        self.relay = relay
        self.pingInterval = pingInterval
        self.spool = spool
        self.turnRules = turnRules
        self.repository = repository
        self.claude = claude
        self.prompt = prompt
        self.supervisor = supervisor
        self.metrics = metrics
        self.logger = logger
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
            guard turn.status != .streaming else { throw .turnInProgress(turnID: turn.id) }
            return TurnHandle(
                threadID: turn.threadID, turnID: turn.id,
                reply: ReplyBroadcast(finishedWith: turn.reply ?? "", final: Self.finalEvent(of: turn, replayedKey: true)))
        case .started(let started):
            for recovered in started.recoveredTurnIDs {
                logger.notice(
                    "recovered a turn whose lease expired (its process stopped); marked interrupted",
                    metadata: ["turn_id": "\(recovered)", "thread_id": "\(threadID)"])
            }
            var request = prompt.request(
                history: started.history, question: input.question, timeZone: input.timeZone, now: Date(),
                userID: input.userID)
            if let model = input.model { request.model = model }
            let context = TurnRun.Context(
                userID: input.userID, threadID: threadID, turnID: started.turnID, request: request)
            launched = true
            guard
                let slot = supervisor.launch(
                    turnID: started.turnID, userID: input.userID, threadID: threadID,
                    operation: { slot in
                        await TurnRun(
                            context: context, slot: slot, claude: self.claude, repository: self.repository,
                            spool: self.spool, metrics: self.metrics, logger: self.logger, machine: self.turnRules,
                            tools: self.tools, toolDeadline: self.toolDeadline, toolOutputLimit: self.toolOutputLimit
                        ).run()
                    })
            else {
                // Raced with shutdown after the row was written: leave nothing `streaming` behind.
                _ = try? await repository.failTurn(
                    TurnFailure(
                        turnID: started.turnID, userID: input.userID, status: .interrupted, partialReply: "",
                        error: "service shutting down", model: request.model, usage: TokenUsage(),
                        firstTokenMs: nil, latencyMs: nil))
                throw .shuttingDown
            }
            return TurnHandle(threadID: threadID, turnID: started.turnID, reply: slot.reply)
        }
    }

    /// The frame that ends a finished turn's stream, rebuilt from its row (a repeated Idempotency-Key, a resume after
    /// the turn ended). `failed` and `interrupted` rows store their error as "type: message".
    static func finalEvent(of turn: Turn, replayedKey: Bool = false) -> TurnEvent {
        switch turn.status {
        case .completed, .cancelled, .streaming:
            return .done(
                TurnOutcome(
                    threadID: turn.threadID, turnID: turn.id, reply: turn.reply ?? "", usage: turn.usage,
                    model: turn.model, stopReason: turn.status == .cancelled ? "cancelled" : turn.stopReason,
                    firstTokenMs: turn.firstTokenMs, latencyMs: turn.latencyMs, replayed: replayedKey))
        case .failed, .interrupted:
            let stored = turn.error ?? "unknown error"
            if replayedKey {
                return .failed(
                    TurnFailureInfo(
                        type: turn.status == .failed ? "turn_failed" : "interrupted",
                        message:
                            "This Idempotency-Key belongs to a turn that did not complete (\(stored)); "
                            + "send the question again with a new key.",
                        retryable: true))
            }
            let parts = stored.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let type = parts.count == 2 && !parts[0].contains(" ") ? parts[0] : turn.status.rawValue
            let message = parts.count == 2 && !parts[0].contains(" ") ? parts[1] : stored
            return .failed(
                TurnFailureInfo(type: type, message: message, retryable: !Self.finalErrorTypes.contains(type)))
        }
    }

    /// Error types that sending the same question again does not fix.
    static let finalErrorTypes: Set<String> = [
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "request_too_large",
        "thread_deleted",
    ]

    private static func agentError(from error: StoreError) -> AgentError {
        if error.code == .threadBusy { return .threadBusy }
        if error.code == .invalidText { return .invalidInput(field: "question", message: error.message) }
        return .storeUnavailable(error)
    }

}
