import Foundation
import TestSupport
import Testing

@testable import ThreadStore

@Suite("Notifications: Database.notify and NotificationListener", .timeLimit(.minutes(1)))
struct NotificationTests {
    /// A database of its own (notifications never cross databases, so parallel tests cannot see each other's) and a
    /// one-connection pool on it, so every notification has the same sender.
    private func freshDatabase() async throws -> (conninfo: String, database: Database) {
        let conninfo = try await TestPostgres.emptyDatabase()
        return (
            conninfo,
            Database(configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger)
        )
    }

    /// A listener whose backend can be found by its `application_name`, already running.
    private func startListener(
        _ conninfo: String, channels: [String], policy: ListenerLiveness.Policy = .init()
    ) throws -> (listener: NotificationListener, run: Task<Void, Never>, applicationName: String) {
        let applicationName = "listener-\(UUID().uuidString.prefix(8).lowercased())"
        let listener = try NotificationListener(
            configuration: DatabaseConfiguration(conninfo: conninfo, applicationName: applicationName),
            channels: channels, logger: TestPostgres.logger, policy: policy)
        return (listener, Task { await listener.run() }, applicationName)
    }

    private func backendPIDs(applicationName: String, via database: Database) async throws -> [Int32] {
        try await database.withConnection {
            try $0.query("SELECT pid FROM pg_stat_activity WHERE application_name = \(applicationName)").rows
                .compactMap { $0[0].flatMap { Int32($0) } }
        }
    }

    private func senderPID(_ database: Database) async throws -> Int32 {
        try await database.withConnection { Int32(try $0.query("SELECT pg_backend_pid()").int(0, 0) ?? 0) }
    }

    @Test("a notification reaches the listener on its channel and not one on another (names are exact: case, spaces)")
    func deliveredOnItsChannelOnly() async throws {
        let (conninfo, database) = try await freshDatabase()
        let (turns, runTurns, _) = try startListener(conninfo, channels: ["chat turns"])
        let (other, runOther, _) = try startListener(conninfo, channels: ["Chat turns"])
        var turnEvents = turns.events.makeAsyncIterator()
        var otherEvents = other.events.makeAsyncIterator()
        #expect(await turnEvents.next() == .listening)
        #expect(await otherEvents.next() == .listening)

        let before = database.statistics.roundTrips
        try await database.notify(channel: "chat turns", payload: "resume 42")
        #expect(database.statistics.roundTrips - before == 1)
        try await database.notify(channel: "Chat turns", payload: "marker")
        let sender = try await senderPID(database)
        #expect(
            await turnEvents.next() == .notification(channel: "chat turns", payload: "resume 42", senderPID: sender))
        // Sent after the first, so had the first reached this listener it would come before the marker.
        #expect(await otherEvents.next() == .notification(channel: "Chat turns", payload: "marker", senderPID: sender))

        turns.stop()
        other.stop()
        await runTurns.value
        await runOther.value
        await database.close()
    }

    @Test("payloads with multi-byte UTF-8, quotes and up to 7,999 bytes arrive intact")
    func payloadsArriveIntact() async throws {
        let (conninfo, database) = try await freshDatabase()
        let (listener, run, _) = try startListener(conninfo, channels: ["payloads"])
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == .listening)

        let payloads = [
            "grüße, 日本語, עברית, \u{2028} and 🎉",
            #"it's "quoted" \ $1 '); SELECT 1; --"#,
            "",
            String(repeating: "é", count: 3999) + "a",  // 7,999 bytes in 2-byte characters
            String(repeating: "🎉", count: 1999) + "abc",  // 7,999 bytes in 4-byte characters
        ]
        #expect(payloads[3].utf8.count == 7999 && payloads[4].utf8.count == 7999)
        for payload in payloads { try await database.notify(channel: "payloads", payload: payload) }
        var received: [String] = []
        while received.count < payloads.count, case .notification(_, let payload, _)? = await events.next() {
            received.append(payload)
        }
        #expect(received == payloads)

        listener.stop()
        await run.value
        await database.close()
    }

    @Test("an 8,000-byte payload, a NUL and out-of-range channel names are refused before any I/O")
    func invalidArgumentsRefusedBeforeIO() async throws {
        // Nothing listens on port 1: a call that got as far as connecting would fail with connectionFailed instead.
        let database = Database(
            configuration: DatabaseConfiguration(conninfo: "postgresql://u@127.0.0.1:1/db", poolSize: 1),
            logger: TestPostgres.logger)
        let refused: [(channel: String, payload: String)] = [
            ("c", String(repeating: "a", count: 8000)),
            ("c", String(repeating: "é", count: 4000)),
            ("c", "a\u{0}b"),
            ("", "x"),
            (String(repeating: "c", count: 64), "x"),
            ("a\u{0}b", "x"),
        ]
        for (channel, payload) in refused {
            let error = await #expect(throws: StoreError.self) {
                try await database.notify(channel: channel, payload: payload)
            }
            #expect(error?.code == .invalidArgument)
        }
        #expect(database.statistics.connectionsOpened == 0 && database.statistics.roundTrips == 0)
        // One byte less passes the checks and fails only at connecting.
        let error = await #expect(throws: StoreError.self) {
            try await database.notify(
                channel: String(repeating: "c", count: 63), payload: String(repeating: "a", count: 7999))
        }
        #expect(error?.code == .connectionFailed)
        await database.close()

        let configuration = DatabaseConfiguration(conninfo: "postgresql://u@127.0.0.1:1/db")
        for channels in [[], [""], ["with \"quote\""], ["nul\u{0}"], [String(repeating: "c", count: 64)]] {
            let error = #expect(throws: StoreError.self) {
                try NotificationListener(configuration: configuration, channels: channels, logger: TestPostgres.logger)
            }
            #expect(error?.code == .invalidArgument)
        }
    }

    @Test("100 notifications sent one after another arrive in the order they were sent")
    func orderIsKept() async throws {
        let (conninfo, database) = try await freshDatabase()
        let (listener, run, _) = try startListener(conninfo, channels: ["ordered"])
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == .listening)

        for index in 0..<100 { try await database.notify(channel: "ordered", payload: "\(index)") }
        var received: [String] = []
        while received.count < 100, case .notification(_, let payload, _)? = await events.next() {
            received.append(payload)
        }
        #expect(received == (0..<100).map(String.init))

        listener.stop()
        await run.value
        await database.close()
    }

    @Test(
        "a listener whose backend is terminated reconnects, yields .listening again and gets new notifications"
    )
    func reconnectsAfterTermination() async throws {
        let (conninfo, database) = try await freshDatabase()
        let (listener, run, applicationName) = try startListener(conninfo, channels: ["turns"])
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == .listening)
        let first = try await backendPIDs(applicationName: applicationName, via: database)
        #expect(first.count == 1)

        for pid in first {
            _ = try await database.withConnection { try $0.query("SELECT pg_terminate_backend(\(pid))") }
        }
        #expect(await events.next() == .listening)
        let second = try await backendPIDs(applicationName: applicationName, via: database)
        #expect(second.count == 1 && second != first)

        try await database.notify(channel: "turns", payload: "after the reconnect")
        let sender = try await senderPID(database)
        #expect(
            await events.next() == .notification(channel: "turns", payload: "after the reconnect", senderPID: sender))

        listener.stop()
        await run.value
        await database.close()
    }

    @Test("a backend that stops answering is noticed by the idle probe and replaced")
    func stalledBackendReplaced() async throws {
        let (conninfo, database) = try await freshDatabase()
        let policy = ListenerLiveness.Policy(probeAfterIdle: .milliseconds(300), answerWithin: .milliseconds(700))
        let (listener, run, applicationName) = try startListener(conninfo, channels: ["turns"], policy: policy)
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == .listening)
        let stalled = try await backendPIDs(applicationName: applicationName, via: database)
        #expect(stalled.count == 1)

        // A stopped backend keeps its socket open and its kernel acknowledges; only the probe's deadline notices.
        for pid in stalled { kill(pid, SIGSTOP) }
        defer { for pid in stalled { kill(pid, SIGCONT) } }
        let clock = ContinuousClock()
        let start = clock.now
        #expect(await events.next() == .listening)
        #expect(clock.now - start < .seconds(10))
        let replacement = try await backendPIDs(applicationName: applicationName, via: database)
        #expect(replacement.contains { !stalled.contains($0) })

        try await database.notify(channel: "turns", payload: "still here")
        let sender = try await senderPID(database)
        #expect(await events.next() == .notification(channel: "turns", payload: "still here", senderPID: sender))

        listener.stop()
        await run.value
        await database.close()
    }

    @Test("stop() ends run() promptly, finishes the stream and closes the connection")
    func stopEndsRun() async throws {
        let (conninfo, database) = try await freshDatabase()
        let (listener, run, applicationName) = try startListener(conninfo, channels: ["turns"])
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == .listening)

        let clock = ContinuousClock()
        let start = clock.now
        listener.stop()
        await run.value
        // At once through the self-pipe; the margin is for a loaded machine (a missed wake-up would take the 30 s probe).
        #expect(clock.now - start < .seconds(5))
        #expect(await events.next() == nil)
        var remaining: [Int32] = [0]
        for _ in 0..<100 where !remaining.isEmpty {
            remaining = try await backendPIDs(applicationName: applicationName, via: database)
            if !remaining.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(remaining.isEmpty)
        await database.close()
    }

    @Test("cancelling the task that runs the listener ends run() and finishes the stream")
    func cancellationEndsRun() async throws {
        let (conninfo, database) = try await freshDatabase()
        let (listener, run, _) = try startListener(conninfo, channels: ["turns"])
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == .listening)
        run.cancel()
        await run.value
        #expect(await events.next() == nil)
        await database.close()
    }

    @Test("a listener that cannot reach the server keeps retrying and still stops promptly; stop before run works too")
    func stopsPromptlyDuringOutage() async throws {
        let (listener, run, _) = try startListener("postgresql://u@127.0.0.1:1/db", channels: ["turns"])
        try await Task.sleep(for: .milliseconds(400))  // a few refused attempts and backoff pauses
        let clock = ContinuousClock()
        let start = clock.now
        listener.stop()
        await run.value
        // At once through the self-pipe; the margin is for a loaded machine (a missed wake-up would take the 30 s probe).
        #expect(clock.now - start < .seconds(5))
        var events = listener.events.makeAsyncIterator()
        #expect(await events.next() == nil, "never listening, so no event at all")

        let neverRun = try NotificationListener(
            configuration: DatabaseConfiguration(conninfo: "postgresql://u@127.0.0.1:1/db"), channels: ["turns"],
            logger: TestPostgres.logger)
        neverRun.stop()
        var neverRunEvents = neverRun.events.makeAsyncIterator()
        #expect(await neverRunEvents.next() == nil)
        await neverRun.run()  // returns at once
    }
}
