public import Foundation

/// Tokens a reply consumed, as Claude reports them.
public struct TokenUsage: Sendable, Hashable, Codable {
    public var inputTokens: Int
    public var outputTokens: Int
    public var cacheCreationInputTokens: Int
    public var cacheReadInputTokens: Int

    public init(
        inputTokens: Int = 0, outputTokens: Int = 0, cacheCreationInputTokens: Int = 0, cacheReadInputTokens: Int = 0
    ) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.cacheCreationInputTokens = cacheCreationInputTokens
        self.cacheReadInputTokens = cacheReadInputTokens
    }
}

/// Where a turn is in its life.
public enum TurnStatus: String, Sendable, Codable {
    /// Claude is replying; the turn holds the thread's lease.
    case streaming
    /// The full reply is stored.
    case completed
    /// Upstream failed; any partial reply is stored.
    case failed
    /// The process stopped (or its lease expired) before the reply finished.
    case interrupted
    /// The user stopped the reply; the part they received is stored.
    case cancelled
}

/// A stored turn: one question and its reply.
public struct Turn: Sendable, Hashable, Codable {
    public var id: UUID
    public var userID: UUID
    public var threadID: String
    /// 1, 2, 3, ... within the thread.
    public var seq: Int
    public var question: String
    public var reply: String?
    public var status: TurnStatus
    public var error: String?
    public var model: String?
    public var stopReason: String?
    public var usage: TokenUsage
    public var startedAt: Date
    public var firstTokenMs: Int?
    public var latencyMs: Int?
    public var finishedAt: Date?
    public var idempotencyKey: String?
    /// The user's IANA time zone when the question was asked, if the client sent one.
    public var userTimeZone: String?
    /// The full content of a reply that used tools or thinking, as JSON text (the messages after the question, in
    /// the Messages API's shape); nil for a reply of text alone, whose content is `reply`.
    public var content: String?

    public init(
        id: UUID, userID: UUID, threadID: String, seq: Int, question: String, reply: String? = nil,
        status: TurnStatus, error: String? = nil, model: String? = nil, stopReason: String? = nil,
        usage: TokenUsage = TokenUsage(), startedAt: Date, firstTokenMs: Int? = nil, latencyMs: Int? = nil,
        finishedAt: Date? = nil, idempotencyKey: String? = nil, userTimeZone: String? = nil, content: String? = nil
    ) {
        self.content = content
        self.userTimeZone = userTimeZone
        self.id = id
        self.userID = userID
        self.threadID = threadID
        self.seq = seq
        self.question = question
        self.reply = reply
        self.status = status
        self.error = error
        self.model = model
        self.stopReason = stopReason
        self.usage = usage
        self.startedAt = startedAt
        self.firstTokenMs = firstTokenMs
        self.latencyMs = latencyMs
        self.finishedAt = finishedAt
        self.idempotencyKey = idempotencyKey
    }
}

/// A thread in a user's list.
public struct ThreadSummary: Sendable, Hashable, Codable {
    public var id: String
    /// The first question, cut to about 80 characters.
    public var title: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var turnCount: Int

    public init(id: String, title: String?, createdAt: Date, updatedAt: Date, turnCount: Int) {
        self.id = id
        self.title = title
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.turnCount = turnCount
    }
}

/// Asks to start a turn: store the question as `streaming` and load the thread's history.
public struct BeginTurnRequest: Sendable {
    public var userID: UUID
    public var threadID: String
    public var question: String
    /// A client-chosen key; a second begin with the same key for this user returns the first turn.
    public var idempotencyKey: String?
    /// How many earlier turns to return as history.
    public var historyLimit: Int
    /// How long the turn holds the thread before another begin may mark it interrupted; renew it while streaming.
    public var lease: Duration
    /// The user's IANA time zone, stored with the turn (shown by `replay`).
    public var userTimeZone: String?

    public init(
        userID: UUID, threadID: String, question: String, idempotencyKey: String? = nil, historyLimit: Int = 50,
        lease: Duration = .seconds(120), userTimeZone: String? = nil
    ) {
        self.userTimeZone = userTimeZone
        self.userID = userID
        self.threadID = threadID
        self.question = question
        self.idempotencyKey = idempotencyKey
        self.historyLimit = historyLimit
        self.lease = lease
    }
}

/// A turn that was just stored as `streaming`.
public struct StartedTurn: Sendable {
    public var turnID: UUID
    public var seq: Int
    /// Whether this begin created the thread.
    public var threadCreated: Bool
    /// Up to `historyLimit` most recent earlier turns of the thread, any status, oldest first; excludes the new turn.
    public var history: [Turn]
    /// Turns whose expired lease this begin marked `interrupted`.
    public var recoveredTurnIDs: [UUID]
}

/// The outcome of `ThreadRepository.beginTurn`.
public enum BeginTurnResult: Sendable {
    /// The turn was stored and the caller should stream the reply.
    case started(StartedTurn)
    /// The idempotency key was already used by this user: the existing turn, whatever its status.
    case duplicate(Turn)
}

/// A reply that finished: stored with status `completed`.
public struct TurnCompletion: Sendable {
    public var turnID: UUID
    public var userID: UUID
    public var reply: String
    public var model: String?
    public var stopReason: String?
    public var usage: TokenUsage
    public var firstTokenMs: Int?
    public var latencyMs: Int?
    /// The full content (JSON text, see `Turn.content`) when the reply used tools or thinking.
    public var content: String?

    public init(
        turnID: UUID, userID: UUID, reply: String, model: String? = nil, stopReason: String? = nil,
        usage: TokenUsage = TokenUsage(), firstTokenMs: Int? = nil, latencyMs: Int? = nil,
        content: String? = nil
    ) {
        self.content = content
        self.turnID = turnID
        self.userID = userID
        self.reply = reply
        self.model = model
        self.stopReason = stopReason
        self.usage = usage
        self.firstTokenMs = firstTokenMs
        self.latencyMs = latencyMs
    }
}

/// A reply that did not finish: stored with status `failed` or `interrupted` and whatever text arrived.
public struct TurnFailure: Sendable {
    public var turnID: UUID
    public var userID: UUID
    /// `.failed` or `.interrupted`.
    public var status: TurnStatus
    public var partialReply: String
    public var error: String
    public var model: String?
    public var usage: TokenUsage
    public var firstTokenMs: Int?
    public var latencyMs: Int?
    /// The full content (JSON text, see `Turn.content`) when the reply used tools or thinking.
    public var content: String?

    public init(
        turnID: UUID, userID: UUID, status: TurnStatus = .failed, partialReply: String = "", error: String,
        model: String? = nil, usage: TokenUsage = TokenUsage(), firstTokenMs: Int? = nil, latencyMs: Int? = nil,
        content: String? = nil
    ) {
        self.content = content
        self.turnID = turnID
        self.userID = userID
        self.status = status
        self.partialReply = partialReply
        self.error = error
        self.model = model
        self.usage = usage
        self.firstTokenMs = firstTokenMs
        self.latencyMs = latencyMs
    }
}
