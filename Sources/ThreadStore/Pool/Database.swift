public import Logging
import Synchronization

/// A small pool of Postgres connections, each confined to its own thread.
///
/// Creating a `Database` opens nothing: each slot connects on first use and reconnects on the next use after its
/// connection broke. Callers beyond `poolSize` wait in FIFO order, at most `maxWaiters` of them and each for at most
/// `acquireTimeout`. Call `close()` when done; it ends the threads.
///
/// ```swift
/// let database = Database(configuration: .init(conninfo: "postgresql://localhost/agent_service"), logger: logger)
/// let result = try await database.withConnection { try $0.query("SELECT \(42)::int") }
/// ```
public final class Database: Sendable {
    /// The configuration the pool was made with.
    public let configuration: DatabaseConfiguration
    let logger: Logger
    let counters = DatabaseCounters()
    private let workers: [ConnectionWorker]
    private let state: Mutex<PoolState>

    private struct PoolState {
        var idle: [Int]
        var waiters: [Waiter] = []
        var nextWaiterID = 0
        var closed = false
    }

    /// What a caller gets on asking for a connection.
    private enum Admission { case worker(ConnectionWorker), closed, overloaded, cancelled, wait(id: Int) }

    /// A caller waiting for a connection: what to run once one is free (on that connection's thread), or how to tell
    /// it that none will be.
    private struct Waiter: Sendable {
        var id: Int
        var start: @Sendable (ConnectionWorker) -> Void
        var fail: @Sendable (any Error) -> Void
    }

    /// A pool for `configuration`; no connection is opened until first use.
    public init(configuration: DatabaseConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let counters = self.counters
        workers = (0..<configuration.poolSize).map {
            ConnectionWorker(index: $0, configuration: configuration, counters: counters, logger: logger)
        }
        state = Mutex(PoolState(idle: Array((0..<configuration.poolSize).reversed())))
    }

    /// Round trips and connection counts so far.
    public var statistics: DatabaseStatistics { counters.snapshot }

    /// Runs `body` on a pooled connection's thread. The connection is opened (or replaced when broken) first.
    ///
    /// A connection goes from one caller to the next on its own thread: when `body` returns, the oldest waiter's
    /// `body` is queued on that thread before the caller is resumed. So the database is kept busy at the pace of the
    /// connections even when Swift's cooperative pool is saturated (at 10,000 streams on two cores, resuming a task
    /// took seconds, and a hand-off that waited for the released caller's task to run starved the pool of work).
    public func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (DatabaseConnection) throws -> T
    ) async throws -> T {
        let immediate: Admission = state.withLock { state in
            if state.closed { return .closed }
            if let index = state.idle.popLast() { return .worker(workers[index]) }
            if state.waiters.count >= configuration.maxWaiters { return .overloaded }
            state.nextWaiterID += 1
            return .wait(id: state.nextWaiterID)
        }
        switch immediate {
        case .worker(let worker):
            return try await withCheckedThrowingContinuation { continuation in
                run(body, on: worker) { continuation.resume(with: $0) }
            }
        case .closed: throw StoreError(.closed, "the database pool is closed")
        case .overloaded: throw overloadedError()
        case .cancelled: throw CancellationError()
        case .wait(let id):
            let timeout = configuration.acquireTimeout
            guard timeout > .zero else { return try await waitInQueue(id: id, body) }
            // The queue wait races a timer. When the timer wins, the wait is cancelled, which takes the waiter out
            // of the queue exactly as a cancelled caller's; a waiter served meanwhile runs to its end.
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask { try await self.waitInQueue(id: id, body) }
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    return nil
                }
                var timedOut = false
                while true {
                    let next: T??
                    do {
                        next = try await group.next()
                    } catch is CancellationError where timedOut && !Task.isCancelled {
                        throw StoreError(
                            .timeout,
                            "no database connection came free within \(timeout.secondsDescription) "
                                + "(all \(configuration.poolSize) are busy)")
                    }
                    guard let next else { throw CancellationError() }  // Both children done: not reached.
                    if let value = next {
                        group.cancelAll()
                        return value
                    }
                    timedOut = true
                    group.cancelAll()
                }
            }
        }
    }

    /// Queues `body` on `worker`'s thread; when it returns, hands the worker on (there), then reports the result.
    private func run<T: Sendable>(
        _ body: @escaping @Sendable (DatabaseConnection) throws -> T, on worker: ConnectionWorker,
        done: @escaping @Sendable (Result<T, any Error>) -> Void
    ) {
        worker.submit { worker in
            let result = Result { try worker.withLiveConnection(body) }
            self.release(worker)
            done(result)
        }
    }

    /// Runs `body` inside `BEGIN ... COMMIT` on one connection's thread; any thrown error rolls back.
    @discardableResult
    public func transaction<T: Sendable>(
        _ body: @escaping @Sendable (DatabaseConnection) throws -> T
    ) async throws -> T {
        try await withConnection { connection in
            try connection.query("BEGIN")
            do {
                let value = try body(connection)
                try connection.query("COMMIT")
                return value
            } catch {
                if !connection.isBroken { _ = try? connection.query("ROLLBACK") }
                throw error
            }
        }
    }

    /// Closes every connection and ends the threads; waiting and later callers get `StoreError.closed`.
    public func close() async {
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.fail(StoreError(.closed, "the database pool is closed")) }
        for worker in workers { await worker.stop() }
    }

    /// How many callers wait for a connection now.
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Queues the caller and suspends until a released connection has run `body` for it, the pool closes, or the
    /// caller is cancelled before its turn came.
    private func waitInQueue<T: Sendable>(
        id: Int, _ body: @escaping @Sendable (DatabaseConnection) throws -> T
    ) async throws -> T {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let waiter = Waiter(
                    id: id,
                    start: { worker in self.run(body, on: worker) { continuation.resume(with: $0) } },
                    fail: { continuation.resume(throwing: $0) })
                let outcome: Admission = state.withLock { state in
                    if state.closed { return .closed }
                    // A slot may have come free since the first look.
                    if let index = state.idle.popLast() { return .worker(workers[index]) }
                    if Task.isCancelled { return .cancelled }
                    if state.waiters.count >= configuration.maxWaiters { return .overloaded }
                    state.waiters.append(waiter)
                    return .wait(id: id)
                }
                switch outcome {
                case .wait: break
                case .worker(let worker): waiter.start(worker)
                case .closed: waiter.fail(StoreError(.closed, "the database pool is closed"))
                case .overloaded: waiter.fail(overloadedError())
                case .cancelled: waiter.fail(CancellationError())
                }
            }
        } onCancel: {
            removeWaiter(id)?.fail(CancellationError())
        }
    }

    /// Takes a waiter out of the queue; nil when it was already served (or never queued).
    private func removeWaiter(_ id: Int) -> Waiter? {
        state.withLock { state in
            state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0) }
        }
    }

    private func overloadedError() -> StoreError {
        StoreError(
            .overloaded,
            "all \(configuration.poolSize) database connections are busy and \(configuration.maxWaiters) callers "
                + "are already waiting; try again shortly")
    }

    /// On `worker`'s thread: gives it to the oldest waiter (whose body is queued there), else marks it idle.
    private func release(_ worker: ConnectionWorker) {
        let waiter = state.withLock { state -> Waiter? in
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.idle.append(worker.index)
            return nil
        }
        waiter?.start(worker)
    }
}

extension Database {
    /// Checks that the server answers (`SELECT 1`), in one round trip.
    public func ping() async throws {
        _ = try await withConnection { try $0.query("SELECT 1") }
    }
}
