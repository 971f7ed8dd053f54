import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ThreadStore

/// No call may hang: a stalled server, a full pool and a slow statement each end in a transient error within a bound.
@Suite("Deadlines: a stalled database fails fast", .timeLimit(.minutes(2)))
struct DeadlineTests {
    /// Stops (SIGSTOP) every backend of `database`'s database, runs `body`, and resumes them however `body` ends. A
    /// stopped backend's kernel still accepts our bytes, so only a client-side deadline notices.
    private func withStoppedBackends<T>(
        of database: Database, _ body: () async throws -> T
    ) async throws -> T {
        let current = try await database.withConnection { try $0.query("SELECT current_database()") }
        let name = try #require(current.string(0, 0))
        let cluster = try await TestPostgres.embedded()
        let admin = Database(
            configuration: DatabaseConfiguration(conninfo: cluster.conninfo(database: "postgres"), poolSize: 1),
            logger: TestPostgres.logger)
        let pids = try await admin.withConnection {
            try $0.query("SELECT pid FROM pg_stat_activity WHERE datname = \(name)").rows.compactMap {
                $0[0].flatMap { Int32($0) }
            }
        }
        await admin.close()
        #expect(!pids.isEmpty)
        for pid in pids { kill(pid, SIGSTOP) }
        defer { for pid in pids { kill(pid, SIGCONT) } }
        return try await body()
    }

    /// Runs `call` and returns the StoreError it threw and how long it took.
    private func failure(_ call: () async throws -> Void) async -> (error: StoreError?, elapsed: Duration) {
        let clock = ContinuousClock()
        let start = clock.now
        do {
            try await call()
            return (nil, clock.now - start)
        } catch {
            return (error as? StoreError, clock.now - start)
        }
    }

    @Test("stopped backends: a query times out transiently, a waiter gives up, and after SIGCONT the pool works again")
    func stoppedBackends() async throws {
        // The statement deadline is well past the 200 ms head start below, so that a loaded machine oversleeping
        // it cannot let the stalled ping time out (and its connection be replaced) before the waiter queues.
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1) {
            $0.statementTimeout = .seconds(3)
            $0.acquireTimeout = .milliseconds(300)
        }
        let repository = ThreadRepository(database: database)
        let user = UUID()
        try await database.ping()

        try await withStoppedBackends(of: database) {
            let stalled = Task { await failure { try await database.ping() } }
            try await Task.sleep(for: .milliseconds(200))  // the stalled ping holds the only slot
            let waiter = await failure { try await database.ping() }
            #expect(waiter.error?.code == .timeout)
            #expect(waiter.error?.isTransient == true)
            #expect(waiter.error?.message == "no database connection came free within 0.3 s (all 1 are busy)")
            #expect(waiter.elapsed >= .milliseconds(300) && waiter.elapsed < .seconds(5))
            #expect(database.waiterCount == 0, "a waiter that timed out leaves the queue")

            let (error, elapsed) = await stalled.value
            #expect(error?.code == .timeout)
            #expect(error?.isTransient == true)
            #expect(error?.message == "the database did not answer within 3 s")
            #expect(elapsed >= .seconds(3) && elapsed < .seconds(8))

            // The abandoned connection is replaced by a new backend, which is not stopped.
            _ = try await repository.listThreads(userID: user, limit: 10, before: nil)
        }
        #expect(database.statistics.connectionsDiscarded == 1)

        // A pipelined batch (every repository call is one) has the same deadline.
        try await withStoppedBackends(of: database) {
            let (error, elapsed) = await failure {
                _ = try await repository.listThreads(userID: user, limit: 10, before: nil)
            }
            #expect(error?.code == .timeout)
            #expect(elapsed >= .seconds(3) && elapsed < .seconds(8))
        }
        try await database.ping()
        _ = try await repository.listThreads(userID: user, limit: 10, before: nil)
        #expect(database.statistics.connectionsDiscarded == 2)
        #expect(database.statistics.connectionsOpened == 3)
        await database.close()
    }

    @Test("with poolSize 1 and maxWaiters 2, the fourth concurrent caller fails at once with a transient error")
    func waiterQueueIsBounded() async throws {
        // The queued callers may wait far longer than the holder holds, so only the fourth caller can fail.
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1) {
            $0.maxWaiters = 2
            $0.acquireTimeout = .seconds(30)
        }
        // Held long enough that a loaded machine still queues both waiters behind it, and well inside their 30 s wait.
        try await database.whileHoldingAConnection(seconds: 5) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<2 {
                    group.addTask { try await database.ping() }
                }
                for _ in 0..<400 where database.waiterCount < 2 { try await Task.sleep(for: .milliseconds(10)) }
                #expect(database.waiterCount == 2)

                let (error, elapsed) = await failure { try await database.ping() }
                #expect(error?.code == .overloaded)
                #expect(error?.isTransient == true)
                #expect(elapsed < .milliseconds(500), "it does not wait for the slot")
                try await group.waitForAll()  // both queued callers succeed
            }
        }
        #expect(database.waiterCount == 0)
        await database.close()
    }

    @Test("a user's statements run with a transaction-local server statement_timeout of nine tenths of the deadline")
    func serverStatementTimeoutIsTransactionLocal() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1) { $0.statementTimeout = .seconds(2) }
        let user = UUID()
        let inside = try await database.withConnection {
            try $0.asUser(user, "SELECT current_setting('statement_timeout')")
        }
        #expect(inside.string(0, 0) == "1800ms")
        let after = try await database.withConnection { try $0.query("SHOW statement_timeout") }
        #expect(after.string(0, 0) == "0")
        await database.close()
    }

    @Test("a slow user statement is cancelled by the server before the client deadline, and the connection survives")
    func slowStatementCancelledByServer() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1) { $0.statementTimeout = .seconds(3) }
        let user = UUID()
        try await database.ping()
        let (error, _) = await failure {
            _ = try await database.withConnection { try $0.asUser(user, "SELECT pg_sleep(10)") }
        }
        #expect(error?.code == .server)
        #expect(error?.sqlState == "57014")
        #expect(error?.isTransient == true)
        try await database.ping()
        #expect(database.statistics.connectionsOpened == 1)
        #expect(database.statistics.connectionsDiscarded == 0)
        await database.close()
    }

    @Test("a statement outlasting the deadline times out, while a migration script has no deadline")
    func scriptsHaveNoDeadline() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1) {
            $0.statementTimeout = .milliseconds(500)
        }
        try await database.withConnection { try $0.executeScript("SELECT pg_sleep(1); SELECT 1") }
        let (error, _) = await failure {
            _ = try await database.withConnection { try $0.query("SELECT pg_sleep(1)") }
        }
        #expect(error?.code == .timeout)
        #expect(error?.message == "the database did not answer within 0.5 s")
        try await database.ping()
        await database.close()
    }

    @Test("TCP keepalives and tcp_user_timeout are added only where the conninfo leaves them unset")
    func socketOptions() throws {
        let plain = DatabaseConfiguration(conninfo: "postgresql://db.example/app")
        let keys = Dictionary(
            Connector.parameters(for: plain, parsed: Connector.parse(plain.conninfo)).map { ($0.key, $0.value) },
            uniquingKeysWith: { first, _ in first })
        #expect(keys["keepalives"] == "1")
        #expect(keys["keepalives_idle"] == "30")
        #expect(keys["keepalives_interval"] == "10")
        #expect(keys["keepalives_count"] == "3")
        #expect(keys["tcp_user_timeout"] == "30000")
        #expect(keys["dbname"] == plain.conninfo)

        let tuned = DatabaseConfiguration(conninfo: "host=db.example keepalives_idle=5 tcp_user_timeout=9000")
        let tunedKeys = Connector.parameters(for: tuned, parsed: Connector.parse(tuned.conninfo)).map(\.key)
        #expect(!tunedKeys.contains("keepalives_idle"))
        #expect(!tunedKeys.contains("tcp_user_timeout"))
        #expect(tunedKeys.contains("keepalives_interval"))
    }

    @Test("a deadline rounds poll waits up, never fires early, and is absent for zero or nil")
    func deadlineArithmetic() {
        let start = ContinuousClock.now
        let deadline = Deadline(after: .milliseconds(1500), now: start)
        #expect(deadline.pollTimeout(now: start) == 1500)
        #expect(deadline.pollTimeout(now: start + .microseconds(1)) == 1500)
        #expect(deadline.pollTimeout(now: start + .milliseconds(1499)) == 1)
        #expect(deadline.pollTimeout(now: start + .seconds(2)) == 0)
        #expect(!deadline.hasPassed(now: start + .milliseconds(1499)))
        #expect(deadline.hasPassed(now: start + .milliseconds(1500)))
        #expect(Deadline(after: nil).pollTimeout() == -1)
        #expect(Deadline(after: .zero).pollTimeout() == -1)
        #expect(Duration.seconds(10).secondsDescription == "10 s")
        #expect(Duration.milliseconds(1500).secondsDescription == "1.5 s")
        #expect(Duration.milliseconds(250).secondsDescription == "0.25 s")
        #expect(UserScope.serverTimeoutMilliseconds(.seconds(10)) == 9000)
        #expect(UserScope.serverTimeoutMilliseconds(.zero) == nil)
    }
}
