import Foundation
import Synchronization
import TestSupport
import Testing

@testable import ThreadStore

@Suite(.timeLimit(.minutes(2))) struct ConnectionTests {
    @Test("a connection whose backend was terminated is replaced and the next call succeeds")
    func terminatedBackendReplaced() async throws {
        let (conninfo, database) = try await TestPostgres.freshDatabase(poolSize: 1)
        let admin = Database(
            configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger)
        let repository = ThreadRepository(database: database)
        let pid = try await database.withConnection { try $0.query("SELECT pg_backend_pid()").int(0, 0) ?? 0 }
        _ = try await admin.withConnection { try $0.query("SELECT pg_terminate_backend(\(pid)::int)") }
        for _ in 0..<100 {
            let alive = try await admin.withConnection {
                try $0.query("SELECT count(*) FROM pg_stat_activity WHERE pid = \(pid)::int").int(0, 0) ?? 0
            }
            if alive == 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        try await repository.ping()
        let newPid = try await database.withConnection { try $0.query("SELECT pg_backend_pid()").int(0, 0) ?? 0 }
        #expect(newPid != pid)
        #expect(database.statistics.connectionsOpened == 2)
        #expect(database.statistics.connectionsDiscarded == 1)

        // Terminated without waiting: a call may fail (transiently), and the one after it succeeds.
        _ = try await admin.withConnection { try $0.query("SELECT pg_terminate_backend(\(newPid)::int)") }
        do { try await repository.ping() } catch let error as StoreError { #expect(error.isTransient) }
        try await repository.ping()
        await admin.close()
        await database.close()
    }

    @Test("a call while the server is down fails fast with a transient error, and works again after restart")
    func serverDown() async throws {
        let directory = URL(fileURLWithPath: "/tmp/agent-service-down-\(UUID().uuidString.prefix(8))")
        let cluster = EmbeddedPostgres(
            directory: directory, databaseName: "down", extraSettings: ["fsync = off"], logger: TestPostgres.logger)
        defer {
            cleanUpOffPool {
                try? cluster.stop(immediate: true)
                try? FileManager.default.removeItem(at: directory)
                try? FileManager.default.removeItem(atPath: directory.path + ".lock")
            }
        }
        let conninfo = try await cluster.startDetached()
        let database = Database(
            configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 2), logger: TestPostgres.logger)
        try await database.ping()
        try await cluster.stopDetached()
        let clock = ContinuousClock()
        let started = clock.now
        do {
            try await database.ping()
            Issue.record("the server is down")
        } catch let error as StoreError {
            #expect(error.isTransient)
        }
        do {
            try await database.ping()
            Issue.record("the server is down")
        } catch let error as StoreError {
            #expect(error.isTransient)
            #expect(error.code == .connectionFailed)
            #expect(error.message.contains("is Postgres running?"))
        }
        #expect(clock.now - started < .seconds(10))
        _ = try await cluster.startDetached()
        try await database.ping()
        await database.close()
    }

    @Test("an unreachable host fails with a one-line message that never shows the password")
    func unreachableHost() async throws {
        let database = Database(
            configuration: DatabaseConfiguration(conninfo: "postgresql://me:hunter2@127.0.0.1:1/app", poolSize: 1),
            logger: TestPostgres.logger)
        do {
            try await database.ping()
            Issue.record("nothing listens on port 1")
        } catch let error as StoreError {
            #expect(error.message == "could not connect to host '127.0.0.1' (connection refused); is Postgres running?")
            #expect(error.isTransient)
            #expect(!String(reflecting: error).contains("hunter2"))
        }
        await database.close()
    }

    @Test("a missing database is reported by name and is not transient")
    func missingDatabase() async throws {
        let cluster = try await TestPostgres.embedded()
        let database = Database(
            configuration: DatabaseConfiguration(conninfo: cluster.conninfo(database: "no_such_db"), poolSize: 1),
            logger: TestPostgres.logger)
        do {
            try await database.ping()
            Issue.record("expected failure")
        } catch let error as StoreError {
            #expect(error.message.contains("database 'no_such_db' does not exist"))
            #expect(!error.isTransient)
        }
        await database.close()
    }

    @Test("callers beyond the pool size wait their turn and all complete on at most poolSize connections")
    func poolQueues() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 2)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<10 {
                group.addTask { _ = try await database.withConnection { try $0.query("SELECT pg_sleep(0.05)") } }
            }
            try await group.waitForAll()
        }
        #expect(database.statistics.connectionsOpened == 2)
        await database.close()
    }

    @Test("a caller waiting for a connection can be cancelled without disturbing the pool")
    func waiterCancellation() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1)
        // The holder keeps the slot long enough that, even on a loaded machine, the waiter is still queued when
        // it is cancelled.
        try await database.whileHoldingAConnection(seconds: 3) {
            let waiter = Task { try await database.withConnection { try $0.query("SELECT 1") } }
            for _ in 0..<500 where database.waiterCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(database.waiterCount == 1)
            waiter.cancel()
            await #expect(throws: CancellationError.self) { _ = try await waiter.value }
        }
        try await database.ping()
        await database.close()
    }

    @Test("a pipelined batch is one round trip and one transaction: a failing statement rolls back the others")
    func pipelineIsAtomic() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1)
        _ = try await database.withConnection { try $0.query("CREATE TABLE p (id int primary key)") }
        let before = database.statistics.roundTrips
        let results = try await database.withConnection {
            try $0.pipeline([
                "INSERT INTO p VALUES (\(1)::int)", "INSERT INTO p VALUES (\(2)::int)", "SELECT count(*) FROM p",
            ])
        }
        #expect(database.statistics.roundTrips - before == 1)
        #expect(results.last?.int(0, 0) == 2)
        await #expect(throws: StoreError.self) {
            _ = try await database.withConnection {
                try $0.pipeline(["INSERT INTO p VALUES (\(3)::int)", "INSERT INTO p VALUES (\(1)::int)"])
            }
        }
        let count = try await database.withConnection { try $0.query("SELECT count(*) FROM p").int(0, 0) }
        #expect(count == 2)
        await database.close()
    }

    @Test("a transaction closure commits on success and rolls back on error")
    func transactions() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 1)
        _ = try await database.withConnection { try $0.query("CREATE TABLE x (id int)") }
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await database.transaction { connection in
                try connection.query("INSERT INTO x VALUES (1)")
                throw Boom()
            }
        }
        try await database.transaction { try $0.query("INSERT INTO x VALUES (2)") }
        let values = try await database.withConnection { try $0.query("SELECT id FROM x").rows }
        #expect(values == [["2"]])
        await database.close()
    }
}
