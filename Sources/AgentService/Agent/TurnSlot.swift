import Dispatch
import Foundation
import Synchronization

/// One running turn as the rest of the service sees it: its ids, its reply (for every listener), and its inbox,
/// through which the supervisor, the lease keeper and the stop endpoint send it events (`TurnMachine.Event`).
final class TurnSlot: Sendable {
    let id: UUID
    let userID: UUID
    let threadID: String
    let reply = ReplyBroadcast()
    let startedNanos: UInt64
    /// When the reply last had news for its listeners (text or a ping), for keep-alives.
    let lastActivityNanos: Atomic<UInt64>
    private let inbox: AsyncStream<TurnMachine.Event>.Continuation
    /// The events for the turn's executor, in order.
    let events: AsyncStream<TurnMachine.Event>

    init(id: UUID, userID: UUID, threadID: String) {
        self.id = id
        self.userID = userID
        self.threadID = threadID
        let now = DispatchTime.now().uptimeNanoseconds
        startedNanos = now
        lastActivityNanos = Atomic(now)
        (events, inbox) = AsyncStream<TurnMachine.Event>.makeStream(bufferingPolicy: .unbounded)
    }

    /// Delivers an event to the turn (ignored once it has finished).
    func post(_ event: TurnMachine.Event) {
        inbox.yield(event)
    }

    /// Ends the inbox: the turn has finished.
    func close() {
        inbox.finish()
    }

    /// Appends relayed text to the reply.
    func relay(_ text: String) {
        lastActivityNanos.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
        reply.append(text)
    }

    /// Shows tool activity or thinking to the reply's listeners.
    func announce(_ activity: TurnActivity) {
        lastActivityNanos.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
        reply.announce(activity)
    }

    /// Pings the reply's listeners when it has been quiet for `interval` nanoseconds.
    func pingIfIdle(now: UInt64, interval: UInt64) {
        guard now &- lastActivityNanos.load(ordering: .relaxed) >= interval else { return }
        lastActivityNanos.store(now, ordering: .relaxed)
        reply.ping()
    }
}
