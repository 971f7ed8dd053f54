import Synchronization

/// The reply of one turn as every listener sees it: the text so far (UTF-8), then one final event.
///
/// Listeners pull: `next(after:)` returns everything past the listener's offset at once, or waits for more. A listener
/// that keeps up gets each delta as it came; one that fell behind (a slow client, a resumer catching up) gets what it
/// missed in one piece, so no listener ever slows the turn or another listener, and memory is the reply itself
/// (bounded by `max_tokens`), not a queue per listener. Offsets are UTF-8 byte offsets, always at character
/// boundaries, so any of them is a resume point (`TurnEvent.chunk`'s `end`).
///
/// Tool activity and thinking (`TurnActivity`) are kept in order with the text they came between, each at the text
/// offset it happened at, for listeners that ask for them; they are no part of the text or its offsets.
final class ReplyBroadcast: Sendable {
    enum Update: Sendable {
        /// The text from the listener's offset to `end`.
        case text(String, end: Int)
        /// The next activity; the listener has now seen `seen` of them.
        case activity(TurnActivity, seen: Int)
        /// Nothing new for a ping interval.
        case ping
        /// The turn ended (`done` or `failed`) and the listener has all of its text.
        case final(TurnEvent)
    }

    /// Where a listener is: its text offset, and how many activities it has seen (nil: it wants text only).
    struct Position: Sendable {
        var offset: Int
        var activities: Int?
    }

    private struct Waiter {
        var position: Position
        var continuation: CheckedContinuation<Update?, Never>
    }

    private struct State {
        var bytes: [UInt8] = []
        var activities: [(offset: Int, activity: TurnActivity)] = []
        var final: TurnEvent?
        var waiters: [Int: Waiter] = [:]
        var cancelled: Set<Int> = []
        var nextWaiterID = 0
    }

    private let state = Mutex(State())

    init() {}

    /// A reply that has already ended (a finished turn read back from the database).
    init(finishedWith text: String, final: TurnEvent) {
        state.withLock { state in
            state.bytes = Array(text.utf8)
            state.final = final
        }
    }

    /// The text so far.
    var text: String { state.withLock { String(decoding: $0.bytes, as: UTF8.self) } }

    /// The length of the text so far, in UTF-8 bytes.
    var count: Int { state.withLock { $0.bytes.count } }

    var isFinished: Bool { state.withLock { $0.final != nil } }

    /// Appends a delta and wakes every waiting listener.
    func append(_ text: String) {
        guard !text.isEmpty else { return }
        let woken = state.withLock { state -> [(CheckedContinuation<Update?, Never>, Update)] in
            let start = state.bytes.count
            state.bytes.append(contentsOf: text.utf8)
            let end = state.bytes.count
            defer { state.waiters.removeAll(keepingCapacity: true) }
            return state.waiters.values.map { waiter in
                // The usual case (the listener was up to date) hands over the delta itself, without a copy.
                let offset = waiter.position.offset
                let update: Update =
                    offset == start
                    ? .text(text, end: end)
                    : .text(String(decoding: state.bytes[min(offset, end)...], as: UTF8.self), end: end)
                return (waiter.continuation, update)
            }
        }
        for (continuation, update) in woken { continuation.resume(returning: update) }
    }

    /// Records an activity at the current end of the text and wakes the listeners that follow activity.
    func announce(_ activity: TurnActivity) {
        let woken = state.withLock { state -> [(CheckedContinuation<Update?, Never>, Update)] in
            guard state.final == nil else { return [] }
            state.activities.append((state.bytes.count, activity))
            var woken: [(CheckedContinuation<Update?, Never>, Update)] = []
            for (id, waiter) in state.waiters where waiter.position.activities != nil {
                state.waiters[id] = nil
                woken.append((waiter.continuation, Self.pending(after: waiter.position, in: state)!))
            }
            return woken
        }
        for (continuation, update) in woken { continuation.resume(returning: update) }
    }

    /// Ends the reply with `event` (`done` or `failed`); listeners get the rest of the text first.
    func finish(_ event: TurnEvent) {
        let woken = state.withLock { state -> [(CheckedContinuation<Update?, Never>, Update)] in
            guard state.final == nil else { return [] }
            state.final = event
            defer { state.waiters.removeAll() }
            return state.waiters.values.map { ($0.continuation, Self.pending(after: $0.position, in: state)!) }
        }
        for (continuation, update) in woken { continuation.resume(returning: update) }
    }

    /// Wakes every waiting listener with a ping (keep-alive for idle streams).
    func ping() {
        let woken = state.withLock { state -> [CheckedContinuation<Update?, Never>] in
            defer { state.waiters.removeAll() }
            return state.waiters.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume(returning: .ping) }
    }

    /// What a listener at `offset` gets next: the text after it, else the final event once the turn ended, else it
    /// waits for either (or a ping). Nil when the listening task is cancelled.
    func next(after offset: Int) async -> Update? {
        await next(after: Position(offset: offset, activities: nil))
    }

    /// `next(after:)` for a listener that follows activity too: activities come in order, between the text before
    /// and after them.
    func next(after position: Position) async -> Update? {
        let id = state.withLock { state -> Int in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Update?, Never>) in
                let ready = state.withLock { state -> Update?? in
                    if state.cancelled.remove(id) != nil { return .some(nil) }
                    if let update = Self.pending(after: position, in: state) { return .some(update) }
                    state.waiters[id] = Waiter(position: position, continuation: continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let waiter = state.waiters.removeValue(forKey: id) else {
                    state.cancelled.insert(id)
                    return nil
                }
                return waiter
            }
            waiter?.continuation.resume(returning: nil)
        }
    }

    private static func pending(after position: Position, in state: State) -> Update? {
        let offset = position.offset
        if let seen = position.activities, seen < state.activities.count {
            let next = state.activities[seen]
            if offset < next.offset {
                return .text(
                    String(decoding: state.bytes[max(offset, 0)..<next.offset], as: UTF8.self), end: next.offset)
            }
            return .activity(next.activity, seen: seen + 1)
        }
        if offset < state.bytes.count {
            return .text(String(decoding: state.bytes[max(offset, 0)...], as: UTF8.self), end: state.bytes.count)
        }
        return state.final.map(Update.final)
    }

    /// `offset` moved back to the start of the character it falls into; nil when it is past the text so far (no
    /// listener can have received more than there is).
    func resumePoint(_ offset: Int) -> Int? {
        state.withLock { state in
            guard offset >= 0, offset <= state.bytes.count else { return nil }
            return Self.characterStart(atOrBefore: offset, in: state.bytes)
        }
    }

    static func characterStart(atOrBefore offset: Int, in bytes: [UInt8]) -> Int {
        var offset = min(max(offset, 0), bytes.count)
        while offset > 0, offset < bytes.count, bytes[offset] & 0xC0 == 0x80 { offset -= 1 }
        return offset
    }

    /// Returns once the reply has ended (or the caller is cancelled).
    func waitUntilFinished() async {
        var offset = count
        while true {
            switch await next(after: offset) {
            case .text(_, let end)?: offset = end
            case .ping?, .activity?: continue
            case .final?, nil: return
            }
        }
    }

    /// The listener's view as a stream of turn events from `offset`, ending after the final event: the text and,
    /// between it, every activity recorded at or after `offset` (a resumer sees the tool activity from its position
    /// on; tool ids make a repeated one recognizable).
    func events(from offset: Int) -> AsyncStream<TurnEvent> {
        let firstActivity = state.withLock { state in
            state.activities.firstIndex { $0.offset >= offset } ?? state.activities.count
        }
        let position = Mutex<(position: Position, ended: Bool)>(
            (Position(offset: offset, activities: firstActivity), false))
        return AsyncStream {
            let (current, ended) = position.withLock { ($0.position, $0.ended) }
            if ended { return nil }
            switch await self.next(after: current) {
            case .text(let text, let end)?:
                position.withLock { $0.position.offset = end }
                return .chunk(text, end: end)
            case .activity(let activity, let seen)?:
                position.withLock { $0.position.activities = seen }
                return .activity(activity)
            case .ping?:
                return .ping
            case .final(let event)?:
                position.withLock { $0.ended = true }
                return event
            case nil:
                return nil
            }
        }
    }
}
