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
        var waiters: [(id: Int, continuation: CheckedContinuation<ConnectionWorker, any Error>)] = []
        var nextWaiterID = 0
        var closed = false
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
    public func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (DatabaseConnection) throws -> T
    ) async throws -> T {
        let worker = try await acquire()
        defer { release(worker) }
        return try await worker.run(body)
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
        for waiter in waiters {
            waiter.continuation.resume(throwing: StoreError(.closed, "the database pool is closed"))
        }
        for worker in workers { await worker.stop() }
    }

    /// How many callers wait for a connection now.
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    private func acquire() async throws -> ConnectionWorker {
        enum Outcome { case worker(ConnectionWorker), closed, overloaded, wait(id: Int) }
        let immediate: Outcome = state.withLock { state in
            if state.closed { return .closed }
            if let index = state.idle.popLast() { return .worker(workers[index]) }
            if state.waiters.count >= configuration.maxWaiters { return .overloaded }
            state.nextWaiterID += 1
            return .wait(id: state.nextWaiterID)
        }
        switch immediate {
        case .worker(let worker): return worker
        case .closed: throw StoreError(.closed, "the database pool is closed")
        case .overloaded: throw overloadedError()
        case .wait(let id):
            let timeout = configuration.acquireTimeout
            guard timeout > .zero else { return try await waitInQueue(id: id) }
            // The queue wait races a timer. When the timer wins, the wait is cancelled, which takes the waiter out
            // of the queue exactly as a cancelled caller's; a waiter served meanwhile keeps its worker.
            return try await withThrowingTaskGroup(of: ConnectionWorker?.self) { group in
                group.addTask { try await self.waitInQueue(id: id) }
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    return nil
                }
                var timedOut = false
                while true {
                    let next: ConnectionWorker??
                    do {
                        next = try await group.next()
                    } catch is CancellationError where timedOut && !Task.isCancelled {
                        throw StoreError(
                            .timeout,
                            "no database connection came free within \(timeout.secondsDescription) "
                                + "(all \(configuration.poolSize) are busy)")
                    }
                    guard let next else { throw CancellationError() }  // Both children done: not reached.
                    if let worker = next {
                        group.cancelAll()
                        return worker
                    }
                    timedOut = true
                    group.cancelAll()
                }
            }
        }
    }

    /// Queues the caller and suspends until `release` hands it a worker, the pool closes, or the caller is cancelled.
    private func waitInQueue(id: Int) async throws -> ConnectionWorker {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                enum Enqueued { case waiting, worker(ConnectionWorker), closed, overloaded, cancelled }
                let outcome: Enqueued = state.withLock { state in
                    if state.closed { return .closed }
                    // A slot may have come free since the first look.
                    if let index = state.idle.popLast() { return .worker(workers[index]) }
                    if Task.isCancelled { return .cancelled }
                    if state.waiters.count >= configuration.maxWaiters { return .overloaded }
                    state.waiters.append((id, continuation))
                    return .waiting
                }
                switch outcome {
                case .waiting: break
                case .worker(let worker): continuation.resume(returning: worker)
                case .closed: continuation.resume(throwing: StoreError(.closed, "the database pool is closed"))
                case .overloaded: continuation.resume(throwing: overloadedError())
                case .cancelled: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            removeWaiter(id)?.resume(throwing: CancellationError())
        }
    }

    /// Takes a waiter out of the queue; nil when it was already served (or never queued).
    private func removeWaiter(_ id: Int) -> CheckedContinuation<ConnectionWorker, any Error>? {
        state.withLock { state in
            state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0).continuation }
        }
    }

    private func overloadedError() -> StoreError {
        StoreError(
            .overloaded,
            "all \(configuration.poolSize) database connections are busy and \(configuration.maxWaiters) callers "
                + "are already waiting; try again shortly")
    }

    private func release(_ worker: ConnectionWorker) {
        let waiter = state.withLock { state -> CheckedContinuation<ConnectionWorker, any Error>? in
            if !state.waiters.isEmpty { return state.waiters.removeFirst().continuation }
            state.idle.append(worker.index)
            return nil
        }
        waiter?.resume(returning: worker)
    }
}

extension Database {
    /// Checks that the server answers (`SELECT 1`), in one round trip.
    public func ping() async throws {
        _ = try await withConnection { try $0.query("SELECT 1") }
    }
}
