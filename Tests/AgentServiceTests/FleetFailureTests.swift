import ClaudeStub
import Foundation
import Synchronization
import TestSupport
import Testing
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

/// Instances that die, restart and start together (part of `FleetTests`, so fleets never overlap).
extension FleetTests {
    @Test("SIGKILL of an instance mid-reply: others serve, its turns end interrupted with their checkpoint, resumers get it")
    func instanceDies() async throws {
        try await Fleet.run { fleet in
            let user = UUID()
            // Six long replies over the three instances (round-robin: two each).
            var streams: [(thread: String, stream: EventStream, reader: EventReader, seen: [ReceivedEvent])] = []
            for index in 0..<6 {
                let stream = try await Self.open(
                    // Two minutes of reply: the kill comes long before the end even on a loaded machine; the
                    // survivors are stopped afterwards rather than waited for.
                    fleet.proxyPort, "[[stub:slow 200ms x 600]] long reply \(index)", user: user, thread: "long-\(index)")
                streams.append(("long-\(index)", stream, stream.reader(), []))
            }
            for index in streams.indices { streams[index].seen += await streams[index].reader.untilFirstChunk() }
            // Until each turn has renewed its lease once (a turn older than a quarter lease is renewed on the next
            // round, so within half a lease), which checkpoints its text in its row.
            let turnIDs = try streams.map { entry in
                try #require(entry.seen.last { $0.id != nil }?.id?.split(separator: ":").first.flatMap { UUID(uuidString: String($0)) })
            }
            let deadline = ContinuousClock.now + .seconds(30)
            for turn in turnIDs {
                while try await fleet.repository.turn(userID: user, id: turn)?.reply?.isEmpty ?? true {
                    guard ContinuousClock.now < deadline else { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            // Keep reading meanwhile: a client that does not read makes the relay merge frames, not wait.
            for index in streams.indices { streams[index].seen += await streams[index].reader.untilFirstChunk() }
            let placed = streams.map { fleet.servedBy($0.stream.headers) }
            let victim = try #require(placed.compactMap { $0 }.max { a, b in
                placed.filter { $0 == a }.count < placed.filter { $0 == b }.count
            })
            let doomed = streams.indices.filter { placed[$0] == victim }
            let killedAt = ContinuousClock.now
            let killedWall = Date()
            await fleet.kill(victim)

            // Its clients lose their connection; the others go on.
            for index in doomed { streams[index].seen += await streams[index].reader.rest() }
            for index in doomed { #expect(streams[index].seen.last?.isDone != true) }

            // New requests through nginx are served by the survivors (connects to the dead one fail over).
            for index in 0..<6 {
                let stream = try await Self.open(fleet.proxyPort, "after the crash \(index)", user: UUID(), thread: "new-\(index)")
                #expect(stream.status == 200)
                #expect(await stream.all().last?.isDone == true)
                #expect(fleet.servedBy(stream.headers) != victim)
            }

            // The clients resume through nginx (on a survivor) from their last id: the rest of the checkpoint, if any,
            // then `interrupted` once the lease has expired.
            let resumed = try await withThrowingTaskGroup(of: (Int, [ReceivedEvent], Duration).self) { group in
                for index in doomed {
                    let thread = streams[index].thread
                    let lastID = streams[index].seen.last { $0.id != nil }?.id
                    group.addTask {
                        let stream = try await Self.resume(fleet.proxyPort, thread: thread, user: user, lastEventID: lastID)
                        #expect(stream.status == 200)
                        let events = await stream.all()
                        return (index, events, ContinuousClock.now - killedAt)
                    }
                }
                var all: [(Int, [ReceivedEvent], Duration)] = []
                for try await result in group { all.append(result) }
                return all
            }
            var markedAfter: Double?
            for (index, events, after) in resumed {
                #expect((events.last?.error?["type"] as? String) == "interrupted", "\(events.map { $0.data ?? "" })")
                // Within the lease (10 s) and one sweep (5 s), with room for a loaded machine.
                #expect(after < .seconds(40))
                let lastID = try #require(streams[index].seen.last { $0.id != nil }?.id)
                let turnID = try #require(lastID.split(separator: ":").first.flatMap { UUID(uuidString: String($0)) })
                let row = try #require(try await fleet.repository.turn(userID: user, id: turnID))
                #expect(row.status == .interrupted)
                let seen = streams[index].seen.compactMap(\.chunk).joined()
                let checkpoint = row.reply ?? ""
                #expect(!checkpoint.isEmpty, "no checkpoint was stored")
                #expect(seen.hasPrefix(checkpoint) || checkpoint.hasPrefix(seen))
                // What the resumer got continues exactly where the client stopped, up to the checkpoint.
                let more = events.compactMap(\.chunk).joined()
                if !more.isEmpty { #expect(seen + more == checkpoint) }
                if let finished = row.finishedAt {
                    markedAfter = max(markedAfter ?? 0, finished.timeIntervalSince(killedWall))
                }
            }
            // Resumed again now that the row is marked, from past its checkpoint: the ending alone, not a 400.
            for index in doomed {
                let lastID = streams[index].seen.last { $0.id != nil }?.id
                let again = try await Self.resume(fleet.proxyPort, thread: streams[index].thread, user: user, lastEventID: lastID)
                #expect(again.status == 200, "\(String(decoding: again.body, as: UTF8.self))")
                #expect((await again.all().last?.error?["type"] as? String) == "interrupted")
            }
            let slowest = resumed.map(\.2).max() ?? .zero
            print("fleet crash: killed instance \(victim) with \(doomed.count) turn(s); marked interrupted after \(markedAfter.map { String(format: "%.1f s", $0) } ?? "?"), resumers answered after \(slowest)")

            // The survivors' streams were not disturbed: still streaming after all this, they end cleanly when
            // stopped (through the proxy, so often from another instance), with exactly what they sent stored.
            for index in streams.indices where !doomed.contains(index) {
                streams[index].seen += await streams[index].reader.untilFirstChunk()
                let stop = try await TestHTTP.request(
                    port: fleet.proxyPort, method: "POST",
                    path: "/threads/\(streams[index].thread)/cancel?user_id=\(user.uuidString.lowercased())")
                #expect(stop.status == 200)
                streams[index].seen += await streams[index].reader.rest()
                let events = streams[index].seen
                #expect(events.last?.isDone == true)
                #expect(events.last?.json["stop_reason"] as? String == "cancelled")
                let turn = try #require(Self.turnID(events))
                #expect(try await fleet.repository.turn(userID: user, id: turn)?.reply == events.compactMap(\.chunk).joined())
            }

            // Restarted on its port, it serves again.
            try await fleet.startInstance(victim)
            let back = try await Self.open(fleet.ports[victim], "back again", user: UUID(), thread: "back")
            #expect(await back.all().last?.isDone == true)
        }
    }

    @Test("a rolling restart (SIGTERM one instance, start it again, next) under load loses and duplicates nothing")
    func rollingRestart() async throws {
        try await Fleet.run { fleet in
            struct Asked: Sendable {
                var user: UUID
                var thread: String
                var question: String
                var text: String
                var turn: UUID
            }
            final class Counters: Sendable {
                let stop = Atomic<Bool>(false)
                let retries = Atomic<Int>(0)
            }
            let counters = Counters()
            // 24 conversations, one 1 s turn after another, each with an Idempotency-Key kept across retries: a
            // request refused or cut while an instance goes down is sent again and must not make a second turn.
            let load = Task {
                try await withThrowingTaskGroup(of: [Asked].self) { group in
                    for index in 0..<24 {
                        group.addTask {
                            let user = UUID()
                            var asked: [Asked] = []
                            var turn = 0
                            while !counters.stop.load(ordering: .relaxed) {
                                turn += 1
                                let question = "[[stub:slow 50ms x 20]] rolling \(index) turn \(turn)"
                                var key = ["Idempotency-Key": "r-\(index)-\(turn)-\(user)"]
                                var attempts = 0
                                while true {
                                    attempts += 1
                                    let stream = try await Self.open(
                                        fleet.proxyPort, question, user: user, thread: "r\(index)", headers: key)
                                    let events = await stream.all()
                                    if stream.status == 200, events.last?.isDone == true, let id = Self.turnID(events) {
                                        let text = events.compactMap(\.chunk).joined()
                                        asked.append(Asked(user: user, thread: "r\(index)", question: question, text: text, turn: id))
                                        break
                                    }
                                    counters.retries.add(1, ordering: .relaxed)
                                    // A request that raced with an instance's shutdown after its row was written is
                                    // stored `interrupted` (with nothing streamed); its key then replays that with a
                                    // retryable error, and the documented answer is a new key.
                                    if events.last?.error?["type"] as? String == "interrupted" {
                                        key = ["Idempotency-Key": "r-\(index)-\(turn)-\(attempts)-\(user)"]
                                    }
                                    guard attempts < 20 else {
                                        throw HarnessError("turn \(turn) of r\(index) failed 20 times: \(stream.status) \(events.last?.data ?? String(decoding: stream.body, as: UTF8.self))")
                                    }
                                    try await Task.sleep(for: .milliseconds(300))
                                }
                            }
                            return asked
                        }
                    }
                    var all: [Asked] = []
                    for try await asked in group { all += asked }
                    return all
                }
            }
            try await Task.sleep(for: .seconds(2))
            for index in fleet.ports.indices {
                let status = await fleet.terminate(index)
                #expect(status == 0, "instance \(index) did not drain cleanly")
                try await fleet.startInstance(index)
                try await Task.sleep(for: .seconds(1))
            }
            try await Task.sleep(for: .seconds(1))
            counters.stop.store(true, ordering: .relaxed)
            let asked = try await load.value
            #expect(asked.count >= 24 * 3)
            var raced = 0
            for (thread, turns) in Dictionary(grouping: asked, by: \.thread) {
                let user = turns[0].user
                let all = try #require(try await fleet.repository.turns(userID: user, threadID: thread, limit: 100, beforeSeq: nil))
                #expect(all.map(\.seq) == Array(1...all.count), "\(thread): \(all.map(\.seq))")
                // Besides the completed turns, only those refused in that race: interrupted before any text.
                let others = all.filter { $0.status != .completed }
                raced += others.count
                #expect(others.allSatisfy { $0.status == .interrupted && ($0.reply ?? "").isEmpty })
                let stored = all.filter { $0.status == .completed }
                #expect(stored.map(\.id) == turns.map(\.turn))
                #expect(stored.map(\.question) == turns.map(\.question))
                #expect(stored.map(\.reply) == turns.map { Optional($0.text) })
            }
            print(
                "fleet rolling restart: \(asked.count) turns completed, \(counters.retries.load(ordering: .relaxed)) request(s) retried, \(raced) admitted as an instance began to drain (stored interrupted, nothing streamed)"
            )
        }
    }

    @Test("three instances started at once on an empty database with AUTO_MIGRATE: one applies, the others wait, all serve")
    func fleetStartMigrates() async throws {
        let conninfo = try await TestPostgres.emptyDatabase()
        let stub = ClaudeStub(logger: .quiet)
        try await stub.start(host: "127.0.0.1", port: 0)
        let environment = [
            "DATABASE_URL": conninfo, "AUTO_MIGRATE": "true", "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": stub.baseURL, "PORT": "0", "LOG_LEVEL": "info",
        ]
        let instances = try await withThrowingTaskGroup(of: ServiceProcess.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    try await ServiceProcess.start(
                        environment: environment.merging([
                            "SPOOL_DIR": FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID())").path
                        ]) { $1 })
                }
            }
            var all: [ServiceProcess] = []
            for try await instance in group { all.append(instance) }
            return all
        }
        #expect(instances.count == 3)
        let applied = instances.filter { $0.log.contains("applied migration") }
        #expect(applied.count == 1, "\(instances.map(\.log))")
        #expect(
            try await Self.scalar(conninfo, "SELECT count(*)::int FROM supabase_migrations.schema_migrations")
                == Migration.bundled.count)
        for instance in instances {
            let stream = try await Self.open(instance.port, "hello", user: UUID(), thread: "start-\(instance.port)")
            #expect(await stream.all().last?.isDone == true)
        }
        for instance in instances {
            instance.process.terminate()
            _ = await instance.waitForExit(timeout: .seconds(15))
        }
        await stub.stop()
    }
}
