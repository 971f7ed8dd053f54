import ClaudeStub
import Foundation
import Synchronization
import TestSupport
import Testing
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

/// Three real `serve` processes behind a real nginx and a real PgBouncer in transaction mode (see `Fleet`).
@Suite("Several instances behind nginx and PgBouncer", .serialized, .timeLimit(.minutes(4)))
struct FleetTests {
    static func open(
        _ port: Int, _ question: String, user: UUID, thread: String, headers: [String: String] = [:]
    ) async throws -> EventStream {
        try await TestHTTP.openEventStream(
            port: port, json: ServiceHarness.body(question, user: user, thread: thread), headers: headers)
    }

    static func resume(_ port: Int, thread: String, user: UUID, lastEventID: String?) async throws -> EventStream {
        try await TestHTTP.openEventStream(
            port: port, method: "GET", path: "/threads/\(thread)/stream?user_id=\(user.uuidString.lowercased())",
            headers: lastEventID.map { ["Last-Event-ID": $0] } ?? [:])
    }

    static func turnID(_ events: [ReceivedEvent]) -> UUID? {
        (events.last?.json["turn_id"] as? String).flatMap(UUID.init(uuidString:))
    }

    // MARK: - The proxy

    @Test("through nginx, deltas arrive one by one, and a silent stream outlives nginx's read timeout on pings")
    func streamingThroughTheProxy() async throws {
        try await Fleet.run { fleet in
            let user = UUID()
            let stream = try await Self.open(fleet.proxyPort, "[[stub:slow 100ms x 20]] pace me", user: user, thread: "paced")
            #expect(stream.status == 200)
            #expect(stream.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            let events = await stream.all()
            let chunks = events.filter { $0.chunk != nil }
            #expect((events.last?.json["usage"] as? [String: Any])?["output_tokens"] as? Int == 20)
            // A buffering proxy would hand them over in one or two bunches at the end.
            #expect(chunks.count >= 14, "only \(chunks.count) frames for 20 deltas")
            let arrivals = chunks.map(\.arrival)
            let spread = arrivals.last! - arrivals.first!
            #expect(spread > .milliseconds(1_200), "chunks arrived bunched together (spread \(spread))")
            let gaps = zip(arrivals.dropFirst(), arrivals).map { $0 - $1 }
            #expect(gaps.filter { $0 > .milliseconds(50) }.count >= chunks.count - 6, "bunched: \(gaps)")
            #expect(events.last?.isDone == true)

            // 4.5 s between two deltas, nginx gives up on an upstream silent for 3 s: only the pings keep it open.
            let idle = try await Self.open(fleet.proxyPort, "[[stub:slow 4500ms x 2]] wait", user: user, thread: "idle")
            let idleEvents = await idle.all()
            #expect(idleEvents.last?.isDone == true, "the idle stream was cut: \(idleEvents.map { $0.data ?? ":" + ($0.comment ?? "") })")
            #expect(idleEvents.filter { $0.comment == "ping" }.count >= 3)
            let turn = try #require(Self.turnID(idleEvents))
            #expect(try await fleet.repository.turn(userID: user, id: turn)?.status == .completed)
        }
    }

    // MARK: - The pooler

    @Test("through PgBouncer in transaction mode: turns are stored and user-scoped; resume and stop cross instances")
    func servingThroughThePooler() async throws {
        try await Fleet.run { fleet in
            let alice = UUID()
            let bob = UUID()
            // Two turns per thread for two users, interleaved over the instances and the pooled server connections.
            for round in 1...2 {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (user, name) in [(alice, "alice"), (bob, "bob")] {
                        for thread in 0..<3 {
                            group.addTask {
                                let stream = try await Self.open(
                                    fleet.proxyPort, "[[stub:slow 10ms x 5]] \(name) \(thread) round \(round)",
                                    user: user, thread: "\(name)-\(thread)")
                                let events = await stream.all()
                                #expect(events.last?.isDone == true)
                                // The history came back through the pooler: round 2 sees question, reply, question.
                                if round == 2 { #expect(events.compactMap(\.chunk).joined().contains("(3 messages)")) }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            for (user, name) in [(alice, "alice"), (bob, "bob")] {
                let list = try await TestHTTP.request(
                    port: fleet.proxyPort, method: "GET", path: "/threads?user_id=\(user.uuidString.lowercased())")
                let threads = (list.json["threads"] as? [[String: Any]] ?? []).compactMap { $0["thread_id"] as? String }
                #expect(Set(threads) == Set((0..<3).map { "\(name)-\($0)" }))
                for thread in threads {
                    let turns = try #require(try await fleet.repository.turns(userID: user, threadID: thread, limit: 10, beforeSeq: nil))
                    #expect(turns.map(\.seq) == [1, 2])
                    #expect(turns.allSatisfy { $0.status == .completed })
                }
            }
            let foreign = try await TestHTTP.request(
                port: fleet.proxyPort, method: "GET",
                path: "/threads/bob-0/messages?user_id=\(alice.uuidString.lowercased())")
            #expect(foreign.status == 404)

            // Resume on instance 1 of a turn running on instance 0: the relay uses the direct listen session.
            let original = try await Self.open(
                fleet.ports[0], "[[stub:slow 100ms x 30]] Grüße 🌍 moving", user: alice, thread: "moving")
            var reader = original.reader()
            var before: [ReceivedEvent] = []
            while before.compactMap(\.chunk).count < 4 { before += await reader.untilFirstChunk() }
            let lastID = try #require(before.last { $0.id != nil }?.id)
            let resumed = try await Self.resume(fleet.ports[1], thread: "moving", user: alice, lastEventID: lastID)
            #expect(resumed.status == 200)
            async let fromB = resumed.all()
            let onA = before + (await reader.rest())
            let onB = await fromB
            #expect(onA.last?.isDone == true)
            #expect(onB.last?.data == onA.last?.data)
            let whole = onA.compactMap(\.chunk).joined()
            #expect(before.compactMap(\.chunk).joined() + onB.compactMap(\.chunk).joined() == whole)
            let moved = try #require(Self.turnID(onA))
            #expect(try await fleet.repository.turn(userID: alice, id: moved)?.reply == whole)

            // Stop sent to instance 2 ends the turn running on instance 1.
            let running = try await Self.open(fleet.ports[1], "[[stub:slow 100ms x 50]] stop me", user: bob, thread: "far")
            var follower = running.reader()
            var events: [ReceivedEvent] = []
            while events.compactMap(\.chunk).count < 3 { events += await follower.untilFirstChunk() }
            let answer = try await TestHTTP.request(
                port: fleet.ports[2], method: "POST", path: "/threads/far/cancel?user_id=\(bob.uuidString.lowercased())")
            #expect(answer.status == 200)
            events += await follower.rest()
            #expect(events.last?.json["stop_reason"] as? String == "cancelled")
            let stopped = try #require((answer.json["turn_id"] as? String).flatMap(UUID.init(uuidString:)))
            let row = try #require(try await fleet.repository.turn(userID: bob, id: stopped))
            #expect(row.status == .cancelled)
            #expect(row.reply == events.compactMap(\.chunk).joined())
        }
    }

    @Test("migrate refuses a transaction pooler in one line and changes nothing; serve's AUTO_MIGRATE migrates over DATABASE_LISTEN_URL or refuses")
    func migrateThroughThePooler() async throws {
        let direct = try await TestPostgres.emptyDatabase()
        let pooler = try await PgBouncer.start(for: direct)
        let pooled = pooler.conninfo(for: direct)
        let stub = ClaudeStub(logger: .quiet)
        try await stub.start(host: "127.0.0.1", port: 0)
        let base = ["ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": stub.baseURL]
        do {
            let refused = try await CommandRun.run(["migrate"], environment: base.merging(["DATABASE_URL": pooled]) { $1 })
            #expect(refused.status == 1)
            let lines = refused.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(refused.stderr)")
            #expect(refused.stderr.contains("transaction-mode pooler"))
            #expect(refused.stderr.contains("direct connection or a session-mode pooler"))
            // Nothing was created, and no advisory lock was left on a pooled backend.
            #expect(try await Self.scalar(direct, "SELECT (to_regclass('supabase_migrations.schema_migrations') IS NULL)::int") == 1)
            #expect(try await Self.scalar(direct, "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == 0)

            // serve with AUTO_MIGRATE through the pooler and no direct URL: one line saying what to do.
            let serveRefused = try await CommandRun.run(
                ["serve"],
                environment: base.merging(["DATABASE_URL": pooled, "AUTO_MIGRATE": "true", "PORT": "0"]) { $1 })
            #expect(serveRefused.status != 0)
            #expect(serveRefused.stderr.contains("AUTO_MIGRATE"))
            #expect(serveRefused.stderr.contains("agent-service migrate"))

            // With DATABASE_LISTEN_URL (direct) it migrates over that, then serves through the pooler.
            let service = try await ServiceProcess.start(
                environment: base.merging([
                    "DATABASE_URL": pooled, "DATABASE_LISTEN_URL": direct, "AUTO_MIGRATE": "true", "PORT": "0",
                    "LOG_LEVEL": "notice",
                    "SPOOL_DIR": FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID())").path,
                ]) { $1 })
            #expect(service.log.contains("applying migrations over DATABASE_LISTEN_URL"))
            let stream = try await Self.open(service.port, "hello", user: UUID(), thread: "after-migrate")
            #expect(await stream.all().last?.isDone == true)
            service.process.terminate()
            _ = await service.waitForExit(timeout: .seconds(15))
            #expect(
                try await Self.scalar(direct, "SELECT count(*)::int FROM supabase_migrations.schema_migrations")
                    == Migration.bundled.count)

            // A direct connection migrates as before.
            let other = try await TestPostgres.emptyDatabase()
            let applied = try await CommandRun.run(["migrate"], environment: base.merging(["DATABASE_URL": other]) { $1 })
            #expect(applied.status == 0, "\(applied.stderr)")
            #expect(applied.stdout.contains("Applied \(Migration.bundled.count) migration(s)"))
        } catch {
            await pooler.stop()
            await stub.stop()
            throw error
        }
        await pooler.stop()
        await stub.stop()
    }

    static func scalar(_ conninfo: String, _ sql: String) async throws -> Int? {
        let database = Database(configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: .quiet)
        do {
            let result = try await database.withConnection { try $0.query(SQLQuery(unsafeSQL: sql)) }
            await database.close()
            return result.int(0, 0)
        } catch {
            await database.close()
            throw error
        }
    }

    // MARK: - No lost or duplicated turns

    @Test("150 conversations of two turns through nginx: every turn stored once, in order, byte-exact; busy and idempotent across instances")
    func noLostOrDuplicatedTurns() async throws {
        try await Fleet.run { fleet in
            struct Sent: Sendable {
                var user: UUID
                var thread: String
                var question: String
                var text: String
                var turn: UUID?
                var instance: Int?
            }
            let conversations = 150
            let users = (0..<conversations).map { _ in UUID() }
            var sent: [[Sent]] = Array(repeating: [], count: conversations)
            for round in 1...2 {
                if round == 2 {
                    // nginx's round robin would give conversation i the same instance again whenever the 150 opens
                    // arrive in the same order as in round 1 (150 is a multiple of 3); one request in between moves
                    // every such second turn to another instance.
                    _ = try await TestHTTP.request(port: fleet.proxyPort, method: "GET", path: "/health")
                }
                let results = try await withThrowingTaskGroup(of: (Int, Sent).self) { group in
                    for index in 0..<conversations {
                        group.addTask {
                            let question = "[[stub:slow 40ms x 10]] conversation \(index) turn \(round) — ü🌍"
                            let stream = try await Self.open(
                                fleet.proxyPort, question, user: users[index], thread: "c\(index)")
                            let events = await stream.all()
                            return (
                                index,
                                Sent(
                                    user: users[index], thread: "c\(index)", question: question,
                                    text: events.compactMap(\.chunk).joined(),
                                    turn: events.last?.isDone == true ? Self.turnID(events) : nil,
                                    instance: fleet.servedBy(stream.headers))
                            )
                        }
                    }
                    var all: [(Int, Sent)] = []
                    for try await result in group { all.append(result) }
                    return all
                }
                for (index, result) in results { sent[index].append(result) }
            }
            var moved = 0
            for conversation in sent {
                #expect(conversation.allSatisfy { $0.turn != nil }, "a stream did not end with done")
                if conversation[0].instance != conversation[1].instance { moved += 1 }
                let stored = try #require(
                    try await fleet.repository.turns(
                        userID: conversation[0].user, threadID: conversation[0].thread, limit: 10, beforeSeq: nil))
                #expect(stored.map(\.seq) == [1, 2])
                #expect(stored.map { Optional($0.id) } == conversation.map(\.turn))
                #expect(stored.map(\.reply) == conversation.map { Optional($0.text) })
                #expect(stored.map(\.question) == conversation.map(\.question))
                #expect(stored.allSatisfy { $0.status == .completed })
            }
            #expect(moved > 0, "every second turn landed on the first turn's instance")
            let perInstance = Dictionary(grouping: sent.joined().compactMap(\.instance)) { $0 }.mapValues(\.count)
            #expect(perInstance.count == 3, "\(perInstance)")

            // A second turn on a thread that streams on instance 0, sent to instance 1: 409 thread_busy.
            let user = UUID()
            let busy = try await Self.open(fleet.ports[0], "[[stub:slow 100ms x 20]] busy", user: user, thread: "busy")
            var reader = busy.reader()
            _ = await reader.untilFirstChunk()
            let second = try await TestHTTP.postJSON(
                port: fleet.ports[1], path: "/query_stream", json: ServiceHarness.body("again", user: user, thread: "busy"))
            #expect(second.status == 409)
            #expect((second.json["error"] as? [String: Any])?["type"] as? String == "thread_busy")
            #expect(await reader.rest().last?.isDone == true)

            // An Idempotency-Key retried on other instances: 409 turn_in_progress while it runs, then the same turn.
            let key = ["Idempotency-Key": "retry-\(UUID())"]
            let first = try await Self.open(
                fleet.ports[1], "[[stub:slow 100ms x 10]] once", user: user, thread: "idem", headers: key)
            var firstReader = first.reader()
            _ = await firstReader.untilFirstChunk()
            let during = try await TestHTTP.postJSON(
                port: fleet.ports[2], path: "/query_stream",
                json: ServiceHarness.body("[[stub:slow 100ms x 10]] once", user: user, thread: "idem"), headers: key)
            #expect(during.status == 409)
            #expect((during.json["error"] as? [String: Any])?["type"] as? String == "turn_in_progress")
            let original = await firstReader.rest()
            let replay = try await Self.open(
                fleet.ports[0], "[[stub:slow 100ms x 10]] once", user: user, thread: "idem", headers: key)
            let replayed = await replay.all()
            #expect(replayed.last?.json["replayed"] as? Bool == true)
            #expect(Self.turnID(replayed) == Self.turnID(original))
            let originalText = try await fleet.repository.turn(userID: user, id: #require(Self.turnID(original)))?.reply
            #expect(replayed.compactMap(\.chunk).joined() == originalText)
            #expect(try await fleet.repository.turns(userID: user, threadID: "idem", limit: 10, beforeSeq: nil)?.count == 1)
        }
    }
}
