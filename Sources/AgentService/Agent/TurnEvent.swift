import Foundation
import ThreadStore

/// What a running turn tells whoever is listening (an SSE response, the `/query` fallback, the terminal chat).
enum TurnEvent: Sendable {
    /// Text from Claude, relayed as it arrived; `end` is the reply's UTF-8 length after it (the resume point).
    case chunk(String, end: Int)
    /// Nothing has happened for a while; transports send a keep-alive.
    case ping
    /// The turn is persisted; this is always the last event of a successful turn.
    case done(TurnOutcome)
    /// The turn failed after it started; what was received is stored. Always the last event.
    case failed(TurnFailureInfo)
    /// Tool activity or thinking, between chunks.
    case activity(TurnActivity)
}

/// A finished, persisted turn.
struct TurnOutcome: Sendable {
    var threadID: String
    var turnID: UUID
    var reply: String
    var usage: TokenUsage
    var model: String?
    var stopReason: String?
    var firstTokenMs: Int?
    var latencyMs: Int?
    /// True when this outcome was replayed from the database for a repeated `Idempotency-Key`.
    var replayed = false
}

/// Why a turn ended without a complete reply, in the words a client is shown.
struct TurnFailureInfo: Error, Sendable, Equatable {
    /// A stable machine-readable kind: `overloaded_error`, `rate_limit_error`, `upstream_truncated`,
    /// `upstream_stalled`, `upstream_unavailable`, `interrupted`, `persistence_failed`, ...
    var type: String
    var message: String
    /// Whether sending the same question again may succeed.
    var retryable: Bool
}

/// A turn that has been admitted: its ids are known and its reply can be followed.
struct TurnHandle: Sendable {
    var threadID: String
    var turnID: UUID
    var reply: ReplyBroadcast

    /// The turn's events from its start.
    var events: AsyncStream<TurnEvent> { reply.events(from: 0) }
}

/// What a turn does besides writing its reply: tool calls and their results, and (for clients that ask) thinking.
/// Shown to listeners as it happens; never part of the reply text or its offsets.
enum TurnActivity: Sendable, Equatable {
    /// Claude asked for a tool; `input` is the call's input as canonical JSON text.
    case toolCall(id: String, name: String, input: String)
    /// A tool answered; `summary` is the start of its output.
    case toolResult(id: String, name: String, isError: Bool, summary: String)
    /// A piece of Claude's thinking (extended thinking only).
    case thinking(String)
}
