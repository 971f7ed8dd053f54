import Dispatch
import Foundation
import Synchronization

/// One running turn as the rest of the service sees it: its ids, its reply (for every listener), and its inbox,
/// through which the upstream stream, the supervisor, the lease keeper and the stop endpoint send it events
/// (`TurnMachine.Event`).
///
/// An event is decided where it is posted: once the turn's executor has installed its decider (`decide(with:)`),
/// `post` runs it on the poster's task, under this slot's lock, so decisions are made one at a time and in the order
/// events arrive. A text delta is thereby relayed to the reply by the task that read it from Claude, with no hop to
/// another task; only actions that do I/O (the upstream request, writes, timers) go on to the executor. Events
/// posted before the decider is installed wait here, in order.
final class TurnSlot: Sendable {
    let id: UUID
    let userID: UUID
    let threadID: String
    let reply = ReplyBroadcast()
    let startedNanos: UInt64
    /// When the reply last had news for its listeners (text or a ping), for keep-alives.
    let lastActivityNanos: Atomic<UInt64>

    private enum Route {
        case waiting([(TurnMachine.Event, StopSignal?)])
        case deciding(@Sendable (TurnMachine.Event, StopSignal?) -> Void)
        case closed
    }

    private let route = Mutex(Route.waiting([]))

    init(id: UUID, userID: UUID, threadID: String) {
        self.id = id
        self.userID = userID
        self.threadID = threadID
        let now = DispatchTime.now().uptimeNanoseconds
        startedNanos = now
        lastActivityNanos = Atomic(now)
    }

    /// Delivers an event to the turn (ignored once it has finished). `decide` runs inside, on this task: it must
    /// not post to this slot itself. An upstream attempt's events name the attempt (`from`), so one that comes after
    /// the turn has moved on to another attempt is dropped.
    func post(_ event: TurnMachine.Event, from attempt: StopSignal? = nil) {
        route.withLock { route in
            switch route {
            case .waiting(var early):
                route = .closed  // leaves `early` uniquely referenced while it grows
                early.append((event, attempt))
                route = .waiting(early)
            case .deciding(let decide):
                decide(event, attempt)
            case .closed:
                break
            }
        }
    }

    /// Installs the executor's decider: the events that waited are decided first, in order, then every later one as
    /// it is posted.
    func decide(with decide: @escaping @Sendable (TurnMachine.Event, StopSignal?) -> Void) {
        route.withLock { route in
            guard case .waiting(let early) = route else { return }
            for (event, attempt) in early { decide(event, attempt) }
            route = .deciding(decide)
        }
    }

    /// Ends the inbox: the turn has finished; later events are dropped.
    func close() {
        route.withLock { $0 = .closed }
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
