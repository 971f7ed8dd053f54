import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Owns every running turn, independently of the connections that asked for them.
///
/// Turns run as child tasks of one task group inside `run()`: not children of their HTTP requests (a client that
/// disconnects stops *listening*; the turn still reads Claude to the end and persists, and can be resumed), and not
/// free tasks either, so shutdown provably waits for every one of them. Shutdown refuses new turns, waits up to a
/// grace period, then sends each remaining turn `.shutdown` (it stores what it has as `interrupted`). The same group
/// runs the keep-alive timer, which pings idle replies from one loop for all turns.
final class TurnSupervisor: Service, Sendable {
    private enum Job: Sendable {
        case turn(TurnSlot, @Sendable (TurnSlot) async -> Void)
        case graceTimer(Duration)
    }

    private struct State {
        var slots: [UUID: TurnSlot] = [:]
        var draining = false
        /// Set once draining found nothing admitted: the run loop ends and no turn can be launched any more.
        var closed = false
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

    /// A running turn as seen by the lease keeper.
    struct RunningTurn: Sendable {
        var turnID: UUID
        var userID: UUID
        var age: Duration
        var slot: TurnSlot
    }

    private let state = Mutex(State())
    private let jobs: AsyncStream<Job>
    private let jobQueue: AsyncStream<Job>.Continuation
    private let maxTurns: Int
    private let maxTurnsPerUser: Int
    private let pingInterval: Duration
    private let logger: Logger

    init(pingInterval: Duration, maxTurns: Int = .max, maxTurnsPerUser: Int = .max, logger: Logger) {
        self.maxTurns = maxTurns
        self.maxTurnsPerUser = maxTurnsPerUser
        self.pingInterval = pingInterval
        self.logger = logger
        (jobs, jobQueue) = AsyncStream<Job>.makeStream(bufferingPolicy: .unbounded)
    }

    // MARK: Running turns

    /// As a service of `serve`'s group: runs the turns, then stays until the group's graceful shutdown reaches it (a
    /// service may not end before that).
    func run() async throws {
        await runTurns()
        try? await gracefulShutdown()
    }

    /// Runs the turns (and the keep-alive timer) until shutdown has begun and the last turn has finished.
    ///
    /// Under a `ServiceGroup` its graceful shutdown (which comes after the HTTP server stopped) begins the shutdown
    /// here, if the signal handler has not already done so with the configured grace period.
    func runTurns() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.keepAlive() }
                for await job in jobs {
                    switch job {
                    case .turn(let slot, let operation):
                        group.addTask {
                            await operation(slot)
                            slot.close()
                            self.finished(slot.id)
                        }
                    case .graceTimer(let grace):
                        group.addTask {
                            do { try await Task.sleep(for: grace) } catch { return }
                            self.interruptAll(reason: "grace period of \(grace) elapsed")
                        }
                    }
                }
                // Every turn has finished: stop the keep-alive and grace timers.
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.beginShutdown(grace: .zero)
        }
    }

    /// Starts `operation` as a supervised turn, with the admission `admit` gave, and returns its slot.
    ///
    /// A turn admitted before shutdown began is still launched while the service drains (its row is written; it
    /// gets the grace period like every running turn). Returns nil (and releases the admission) only when the
    /// supervisor has already stopped running turns.
    func launch(
        turnID: UUID, userID: UUID, threadID: String, operation: @escaping @Sendable (TurnSlot) async -> Void
    ) -> TurnSlot? {
        let slot = TurnSlot(id: turnID, userID: userID, threadID: threadID)
        let accepted = state.withLock { state -> Bool in
            guard !state.closed else {
                Self.release(userID, in: &state)
                return false
            }
            state.slots[turnID] = slot
            return true
        }
        guard accepted else { return nil }
        jobQueue.yield(.turn(slot, operation))
        return slot
    }

    private func finished(_ id: UUID) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            if let slot = state.slots.removeValue(forKey: id) { Self.release(slot.userID, in: &state) }
            closeIfDrained(&state)
            guard state.slots.isEmpty else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// The running turn with this id, if it runs in this process.
    func slot(_ turnID: UUID) -> TurnSlot? {
        state.withLock { $0.slots[turnID] }
    }

    /// The running turn of this user's thread, if it runs in this process.
    func slot(userID: UUID, threadID: String) -> TurnSlot? {
        state.withLock { state in state.slots.values.first { $0.userID == userID && $0.threadID == threadID } }
    }

    /// The turns running now, with their age.
    func runningTurns() -> [RunningTurn] {
        let now = DispatchTime.now().uptimeNanoseconds
        return state.withLock { state in
            state.slots.values.map {
                RunningTurn(turnID: $0.id, userID: $0.userID, age: .nanoseconds(now &- $0.startedNanos), slot: $0)
            }
        }
    }

    /// Sends `event` to a running turn; false when no such turn runs here.
    @discardableResult
    func post(_ event: TurnMachine.Event, to turnID: UUID) -> Bool {
        guard let slot = slot(turnID) else { return false }
        slot.post(event)
        return true
    }

    /// Number of turns running now.
    var activeCount: Int { state.withLock { $0.slots.count } }

    /// True once shutdown has begun; new turns are refused.
    var isDraining: Bool { state.withLock { $0.draining } }

    // MARK: Admission

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
        state.withLock { state in
            Self.release(userID, in: &state)
            closeIfDrained(&state)
        }
    }

    /// Ends the run loop once shutdown has begun and no turn is admitted (none beginning, none running).
    private func closeIfDrained(_ state: inout State) {
        guard state.draining, !state.closed, state.admitted == 0 else { return }
        state.closed = true
        jobQueue.finish()
    }

    private static func release(_ userID: UUID, in state: inout State) {
        state.admitted -= 1
        let mine = state.admittedPerUser[userID, default: 1] - 1
        state.admittedPerUser[userID] = mine > 0 ? mine : nil
    }

    /// Turns admitted now (running, or still beginning), for tests and metrics.
    var admittedCount: Int { state.withLock { $0.admitted } }

    // MARK: Shutdown

    /// Refuses new turns from now on, and interrupts whatever still runs after `grace`. Only the first call counts.
    func beginShutdown(grace: Duration) {
        let (first, running) = state.withLock { state -> (Bool, Int) in
            let first = !state.draining
            state.draining = true
            closeIfDrained(&state)
            // Turns still beginning in the database count: they are launched and get the grace period too.
            return (first, state.admitted)
        }
        guard first else { return }
        logger.notice(
            "shutdown: refusing new turns; waiting up to \(grace) for \(running) running turn(s) to finish and persist")
        if running > 0 { jobQueue.yield(.graceTimer(grace)) }
    }

    /// Interrupts every running turn; each stores its partial reply as `interrupted`.
    func interruptAll(reason: String) {
        let slots = state.withLock { Array($0.slots.values) }
        guard !slots.isEmpty else { return }
        logger.warning("shutdown: \(reason); interrupting \(slots.count) turn(s), their partial replies are saved")
        for slot in slots { slot.post(.shutdown) }
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

    /// Pings replies that were quiet for a ping interval. Never waits on anything: lease renewal and the sweeper run
    /// on schedules of their own (`LeaseKeeper`), so a slow database cannot hold back keep-alives.
    private func keepAlive() async {
        let interval =
            UInt64(pingInterval.components.seconds) * 1_000_000_000
            + UInt64(pingInterval.components.attoseconds / 1_000_000_000)
        while true {
            do { try await Task.sleep(for: pingInterval) } catch { return }
            let now = DispatchTime.now().uptimeNanoseconds
            for slot in state.withLock({ Array($0.slots.values) }) { slot.pingIfIdle(now: now, interval: interval) }
        }
    }
}
