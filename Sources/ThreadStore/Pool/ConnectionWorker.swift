import Foundation
import Synchronization
import Logging

/// One pool slot: a dedicated thread that owns at most one libpq connection and runs jobs on it one at a time.
///
/// Confinement: `connection` is only touched on `thread`; `jobs` and `state` only under `condition`.
final class ConnectionWorker: @unchecked Sendable {
    typealias Job = (ConnectionWorker) -> Void

    let index: Int
    private let configuration: DatabaseConfiguration
    private let counters: DatabaseCounters
    private let logger: Logger
    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var started = false
    private var stopping = false
    private var onExit: [CheckedContinuation<Void, Never>] = []
    private var connection: DatabaseConnection?

    init(index: Int, configuration: DatabaseConfiguration, counters: DatabaseCounters, logger: Logger) {
        self.index = index
        self.configuration = configuration
        self.counters = counters
        self.logger = logger
    }

    /// Runs `body` on this worker's thread without a connection (blocking work such as starting a cluster).
    func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit { _ in continuation.resume(with: Result { try body() }) }
        }
    }

    /// Queues `job` for this worker's thread (started on first use).
    func submit(_ job: @escaping Job) {
        condition.lock()
        jobs.append(job)
        if !started {
            started = true
            let thread = Thread { [self] in loop() }
            thread.name = "postgres-\(index)"
            thread.start()
        }
        condition.signal()
        condition.unlock()
    }

    /// Closes the connection and ends the thread once queued jobs have run.
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if !started {
                condition.unlock()
                continuation.resume()
                return
            }
            stopping = true
            onExit.append(continuation)
            condition.signal()
            condition.unlock()
        }
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty {
                let waiters = onExit
                onExit = []
                started = false
                stopping = false
                condition.unlock()
                connection = nil
                for waiter in waiters { waiter.resume() }
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job(self)
        }
    }

    /// On this worker's thread: `body` with a live connection (opened, or replaced when broken, first).
    func withLiveConnection<T>(_ body: (DatabaseConnection) throws -> T) throws -> T {
        if let existing = connection, !existing.isAliveWithoutRoundTrip() {
            logger.info("discarding a broken database connection", metadata: ["slot": "\(index)"])
            counters.connectionsDiscarded.add(1, ordering: .relaxed)
            connection = nil
        }
        let live: DatabaseConnection
        if let existing = connection {
            live = existing
        } else {
            live = try Connector.open(configuration, counters: counters)
            connection = live
        }
        defer {
            if live.isBroken {
                logger.info("database connection broke; it will be replaced", metadata: ["slot": "\(index)"])
                counters.connectionsDiscarded.add(1, ordering: .relaxed)
                connection = nil
            }
        }
        return try body(live)
    }
}
