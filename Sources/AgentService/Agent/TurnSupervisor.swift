import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Owns every running turn, independently of the connections that asked for them.
///
/// A turn's task is not a child of its HTTP request: a client that disconnects stops *listening*, and the turn
/// still reads Claude to the end and persists. The supervisor keeps the tasks so that shutdown can wait for them
/// (up to a grace period) and then cancel the rest, which makes each persist what it has as `interrupted`. It also
/// sends keep-alive pings to streams that have been idle, from one timer for all turns.
final class TurnSupervisor: Service, Sendable {
    /// One running turn.
    final class Slot: Sendable {
        let id: UUID
        let userID: UUID
        let continuation: AsyncStream<TurnEvent>.Continuation
        let lastEventNanos: Atomic<UInt64>
        let startedNanos: UInt64
        /// The turn's task, and whether it was cancelled before the task was set (so a cancel is never lost).
        private let control = Mutex<(task: Task<Void, Never>?, cancelled: Bool)>((nil, false))
        /// Why the supervisor cancelled the turn, when it was not shutdown (e.g. its lease was lost).
        let cancellationReason: Mutex<TurnFailureInfo?> = Mutex(nil)

        init(id: UUID, userID: UUID, continuation: AsyncStream<TurnEvent>.Continuation, now: UInt64) {
            self.id = id
            self.userID = userID
            self.continuation = continuation
            self.lastEventNanos = Atomic(now)
            self.startedNanos = now
        }

        /// The reason given to `TurnSupervisor.cancel(turnID:reason:)`, if that is how the turn was stopped.
        var stopReason: TurnFailureInfo? { cancellationReason.withLock { $0 } }

        func attach(_ task: Task<Void, Never>) {
            let cancelled = control.withLock { control -> Bool in
                control.task = task
                return control.cancelled
            }
            if cancelled { task.cancel() }
        }

        func cancel() {
            let task = control.withLock { control -> Task<Void, Never>? in
                control.cancelled = true
                return control.task
            }
            task?.cancel()
        }

        /// Relays an event to the listener (if any is still there) and notes the time.
        func send(_ event: TurnEvent) {
            lastEventNanos.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
            continuation.yield(event)
        }
    }

    private struct State {
        var slots: [UUID: Slot] = [:]
        var draining = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// Turns admitted and not yet finished (beginning in the database, or running), in all and per user.
        var admitted = 0
        var admittedPerUser: [UUID: Int] = [:]
    }

    /// Why `admit` refused a turn.
    enum Refusal: Error, Sendable {
        case draining
        /// `MAX_ACTIVE_TURNS` turns run already.
        case tooManyTurns(limit: Int)
        /// The user runs `MAX_ACTIVE_TURNS_PER_USER` turns already.
        case tooManyTurnsForUser(limit: Int)
    }

    private let state = Mutex(State())
    private let maxTurns: Int
    private let maxTurnsPerUser: Int
    private let pingInterval: Duration
    private let logger: Logger
    /// A running turn as seen by the periodic tick.
    struct RunningTurn: Sendable {
        var turnID: UUID
        var userID: UUID
        var age: Duration
    }

    init(pingInterval: Duration, maxTurns: Int = .max, maxTurnsPerUser: Int = .max, logger: Logger) {
        self.maxTurns = maxTurns
        self.maxTurnsPerUser = maxTurnsPerUser
        self.pingInterval = pingInterval
        self.logger = logger
    }

    /// The turns running now, with their age.
    func runningTurns() -> [RunningTurn] {
        let now = DispatchTime.now().uptimeNanoseconds
        return state.withLock { state in
            state.slots.values.map {
                RunningTurn(turnID: $0.id, userID: $0.userID, age: .nanoseconds(now &- $0.startedNanos))
            }
        }
    }

    /// Cancels one running turn for `reason` (its stream ends with that error after the partial reply is stored).
    func cancel(turnID: UUID, reason: TurnFailureInfo) {
        guard let slot = state.withLock({ $0.slots[turnID] }) else { return }
        slot.cancellationReason.withLock { $0 = reason }
        slot.cancel()
    }

    /// Number of turns running now.
    var activeCount: Int { state.withLock { $0.slots.count } }

    /// True once shutdown has begun; new turns are refused.
    var isDraining: Bool { state.withLock { $0.draining } }

    /// Reserves a place for one more turn of `userID`, before anything is written. Every admission ends with exactly
    /// one `launch` (the turn's end releases it) or one `release`.
    func admit(userID: UUID) throws(Refusal) {
        let refusal: Refusal? = state.withLock { state in
            if state.draining { return .draining }
            if state.admitted >= maxTurns { return .tooManyTurns(limit: maxTurns) }
            let mine = state.admittedPerUser[userID, default: 0]
            if mine >= maxTurnsPerUser { return .tooManyTurnsForUser(limit: maxTurnsPerUser) }
            state.admitted += 1
            state.admittedPerUser[userID] = mine + 1
            return nil
        }
        if let refusal { throw refusal }
    }

    /// Gives back an admission that did not become a running turn.
    func release(userID: UUID) {
        state.withLock { Self.release(userID, in: &$0) }
    }

    private static func release(_ userID: UUID, in state: inout State) {
        state.admitted -= 1
        let mine = state.admittedPerUser[userID, default: 1] - 1
        state.admittedPerUser[userID] = mine > 0 ? mine : nil
    }

    /// Turns admitted now (running, or still beginning), for tests and metrics.
    var admittedCount: Int { state.withLock { $0.admitted } }

    /// Starts `operation` as a supervised turn and returns the stream of its events; uses the admission `admit` gave.
    ///
    /// Returns nil (and releases the admission) when the service is shutting down. The stream buffers without limit (a reply is bounded by
    /// `max_tokens`), so a slow or departed listener never slows the turn.
    func launch(
        turnID: UUID,
        userID: UUID,
        operation: @escaping @Sendable (Slot) async -> Void
    ) -> AsyncStream<TurnEvent>? {
        let (stream, continuation) = AsyncStream<TurnEvent>.makeStream(bufferingPolicy: .unbounded)
        let slot = Slot(
            id: turnID, userID: userID, continuation: continuation, now: DispatchTime.now().uptimeNanoseconds)
        let admitted = state.withLock { state -> Bool in
            guard !state.draining else {
                Self.release(userID, in: &state)
                return false
            }
            state.slots[turnID] = slot
            return true
        }
        guard admitted else {
            continuation.finish()
            return nil
        }
        let task = Task {
            await operation(slot)
            slot.continuation.finish()
            self.finished(turnID)
        }
        slot.attach(task)
        return stream
    }

    private func finished(_ id: UUID) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            if let slot = state.slots.removeValue(forKey: id) { Self.release(slot.userID, in: &state) }
            guard state.slots.isEmpty else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Refuses new turns from now on, and cancels whatever is still running after `grace`.
    func beginShutdown(grace: Duration) {
        let first = state.withLock { state -> Bool in
            defer { state.draining = true }
            return !state.draining
        }
        guard first else { return }
        let running = activeCount
        logger.notice(
            "shutdown: refusing new turns; waiting up to \(grace) for \(running) running turn(s) to finish and persist")
        Task {
            try? await Task.sleep(for: grace)
            self.cancelAll(reason: "grace period of \(grace) elapsed")
        }
    }

    /// Cancels every running turn; each stores its partial reply as `interrupted`.
    func cancelAll(reason: String) {
        let slots = state.withLock { Array($0.slots.values) }
        guard !slots.isEmpty else { return }
        logger.warning("shutdown: \(reason); interrupting \(slots.count) turn(s), their partial replies are saved")
        for slot in slots { slot.cancel() }
    }

    /// Returns once no turn is running.
    func waitUntilIdle() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { state -> Bool in
                if state.slots.isEmpty { return true }
                state.idleWaiters.append(waiter)
                return false
            }
            if idle { waiter.resume() }
        }
    }

    /// Sends pings to idle streams until graceful shutdown, then waits for the running turns.
    ///
    /// The graceful-shutdown signal from the service group arrives after the HTTP server has stopped; the grace
    /// period itself is started earlier by `beginShutdown(grace:)` from the signal handler, so this only makes sure
    /// nothing is still running when the database closes.
    func run() async throws {
        let ticker = Task {
            while !Task.isCancelled {
                do { try await Task.sleep(for: pingInterval) } catch { break }
                tick()
            }
        }
        defer { ticker.cancel() }
        try? await gracefulShutdown()
        beginShutdown(grace: .zero)
        await waitUntilIdle()
    }

    /// Pings streams that were silent for a ping interval. Never waits on anything: lease renewal and the sweeper
    /// run on schedules of their own (`LeaseKeeper`), so a slow database cannot hold back keep-alives.
    private func tick() {
        let now = DispatchTime.now().uptimeNanoseconds
        let interval =
            UInt64(pingInterval.components.seconds) * 1_000_000_000
            + UInt64(pingInterval.components.attoseconds / 1_000_000_000)
        let slots = state.withLock { Array($0.slots.values) }
        for slot in slots where now &- slot.lastEventNanos.load(ordering: .relaxed) >= interval {
            slot.send(.ping)
        }
    }
}
