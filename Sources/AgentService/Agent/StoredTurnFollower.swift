import Foundation
import Synchronization
import ThreadStore

/// Follows a turn that streams in another process from its row alone: the reply as far as the owner checkpointed
/// it, then the stored ending. A turn whose owner died is recovered (`interrupted`) by the poll itself once its lease
/// has expired, so a follower always reaches an end.
///
/// This is the fallback when the owner cannot be asked (no relay, or the owner is gone); it costs one small query
/// per poll interval for as long as it follows.
struct StoredTurnFollower: Sendable {
    let repository: ThreadRepository
    let pingInterval: Duration
    var pollInterval: Duration = .seconds(1)

    /// The turn's events from `offset` (UTF-8 bytes the client has), starting from the row as last read.
    func events(of turn: Turn, from offset: Int) -> AsyncStream<TurnEvent> {
        struct Position {
            var offset: Int
            var row: Turn?
            var pendingFinal: TurnEvent?
            var ended = false
        }
        let position = Mutex(Position(offset: offset, row: turn))
        let repository = self.repository
        let poll = pollInterval
        let ping = pingInterval
        return AsyncStream {
            var quiet = Duration.zero
            while true {
                let (state, row) = position.withLock { state -> (Position, Turn?) in
                    defer { state.row = nil }
                    return (state, state.row)
                }
                if state.ended { return nil }
                if let final = state.pendingFinal {
                    position.withLock { $0.ended = true }
                    return final
                }
                let current: Turn?
                if let row {
                    current = row
                } else {
                    do {
                        current = try await repository.recoverIfExpired(userID: turn.userID, turnID: turn.id)
                    } catch {
                        current = turn  // A failed poll is retried after the interval.
                        if Task.isCancelled { return nil }
                    }
                }
                guard let current else {
                    position.withLock { $0.ended = true }
                    return .failed(
                        TurnFailureInfo(
                            type: "thread_deleted", message: "The thread was deleted while this reply was streaming.",
                            retryable: false))
                }
                let text = Array((current.reply ?? "").utf8)
                let finished = current.status != .streaming
                if text.count > state.offset {
                    let start = ReplyBroadcast.characterStart(atOrBefore: state.offset, in: text)
                    position.withLock { state in
                        state.offset = text.count
                        if finished { state.pendingFinal = Agent.finalEvent(of: current) }
                    }
                    return .chunk(String(decoding: text[start...], as: UTF8.self), end: text.count)
                }
                if finished {
                    position.withLock { $0.ended = true }
                    return Agent.finalEvent(of: current)
                }
                do { try await Task.sleep(for: poll) } catch { return nil }
                quiet += poll
                if quiet >= ping { return .ping }
            }
        }
    }
}
