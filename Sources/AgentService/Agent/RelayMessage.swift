import Foundation
import ThreadStore

/// What instances tell each other about running turns, as `NOTIFY` payloads (JSON, always under Postgres' 8,000-byte
/// limit).
///
/// Requests go to the channel every instance listens on (`TurnRelay.requestChannel`); only the turn's owner acts on
/// them. Answers go to the asking instance's own channel, addressed to one follower (`sub`).
struct RelayMessage: Codable, Sendable, Equatable {
    enum Operation: String, Codable, Sendable {
        /// Send me the reply from `from` on, then its end.
        case follow
        /// I no longer listen (my client left).
        case unfollow
        /// Stop the turn, and tell me once its ending is stored.
        case cancel
    }

    /// The final frame of a turn, as the owner sent it.
    struct Final: Codable, Sendable, Equatable {
        var done: Bool
        var usage: TokenUsage?
        var model: String?
        var stopReason: String?
        var firstTokenMs: Int?
        var latencyMs: Int?
        var type: String?
        var message: String?
        var retryable: Bool?
    }

    var sub: UUID
    var op: Operation?
    var turn: UUID?
    /// The asker's channel, for answers.
    var to: String?
    var from: Int?
    /// Answer: text of the reply starting at UTF-8 offset `at`.
    var at: Int?
    var text: String?
    /// Answer: the reply ended (after all text up to `at`).
    var end: Final?
    /// Answer to `cancel`: the turn has stopped.
    var ack: Bool?

    static let encoder = JSONEncoder()
    static let decoder = JSONDecoder()

    func payload() -> String {
        String(decoding: (try? Self.encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    static func parse(_ payload: String) -> RelayMessage? {
        try? decoder.decode(RelayMessage.self, from: Data(payload.utf8))
    }

    /// The largest payload sent (Postgres refuses 8,000 bytes and more).
    static let maximumPayload = 7_900

    /// Text messages for `text` starting at `offset`, each within the payload limit and cut at character boundaries.
    static func pieces(of text: String, at offset: Int, sub: UUID) -> [RelayMessage] {
        var messages: [RelayMessage] = []
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            // Escaping can grow text up to six times (control characters): start generous, halve until it fits.
            var take = min(bytes.count - start, 7_000)
            while true {
                var end = start + take
                while end < bytes.count, end > start, bytes[end] & 0xC0 == 0x80 { end -= 1 }
                if end == start {
                    // Never less than one whole character.
                    end = start + 1
                    while end < bytes.count, bytes[end] & 0xC0 == 0x80 { end += 1 }
                }
                let message = RelayMessage(
                    sub: sub, at: offset + start, text: String(decoding: bytes[start..<end], as: UTF8.self))
                if message.payload().utf8.count <= maximumPayload || end - start <= 4 {
                    messages.append(message)
                    start = end
                    break
                }
                take = max((end - start) / 2, 1)
            }
        }
        return messages
    }

    /// The final frame for `event` (`done` or `failed`), with messages cut short enough to fit.
    static func final(_ event: TurnEvent) -> Final? {
        switch event {
        case .done(let outcome):
            return Final(
                done: true, usage: outcome.usage, model: outcome.model, stopReason: outcome.stopReason,
                firstTokenMs: outcome.firstTokenMs, latencyMs: outcome.latencyMs)
        case .failed(let failure):
            return Final(
                done: false, type: String(failure.type.prefix(200)), message: String(failure.message.prefix(2_000)),
                retryable: failure.retryable)
        case .chunk, .ping, .activity:
            return nil
        }
    }

    /// The turn event a follower ends with.
    static func event(_ final: Final, threadID: String, turnID: UUID, reply: String) -> TurnEvent {
        if final.done {
            return .done(
                TurnOutcome(
                    threadID: threadID, turnID: turnID, reply: reply, usage: final.usage ?? TokenUsage(),
                    model: final.model, stopReason: final.stopReason, firstTokenMs: final.firstTokenMs,
                    latencyMs: final.latencyMs))
        }
        return .failed(
            TurnFailureInfo(
                type: final.type ?? "internal_error", message: final.message ?? "", retryable: final.retryable ?? true))
    }
}
