import ClaudeStub
import Foundation
import Logging
import TestSupport
import Testing
import Synchronization
import ThreadStore

@testable import AgentService

/// The built `agent-service` binary, run as a real process.
struct ServiceProcess {
    let process: SpawnedProcess
    let port: Int
    /// Everything the process logged so far.
    let logText: LogBuffer

    final class LogBuffer: Sendable {
        private let text = Mutex("")
        func append(_ more: String) { text.withLock { $0 += more } }
        var value: String { text.withLock { $0 } }
    }

    var log: String { logText.value }

    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["AGENT_SERVICE_BINARY"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/agent-service")
    }

    static func start(environment: [String: String], arguments: [String] = ["serve"]) async throws -> ServiceProcess {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw HarnessError("\(binary.path) is missing: run `swift build` first (or set AGENT_SERVICE_BINARY)")
        }
        let process = try SpawnedProcess(
            executable: binary.path, arguments: arguments,
            environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
                .merging(environment) { $1 },
            currentDirectory: FileManager.default.temporaryDirectory.path, standardError: .pipe)
        let log = LogBuffer()
        let port = try await Self.listeningPort(process, log: log)
        return ServiceProcess(process: process, port: port, logText: log)
    }

    /// Reads the log until the "listening on http://host:port" line.
    private static func listeningPort(_ process: SpawnedProcess, log: LogBuffer) async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                var text = ""
                while true {
                    let data = process.read(.standardError)
                    if data.isEmpty {
                        continuation.resume(throwing: HarnessError("service exited before listening:\n\(text)"))
                        return
                    }
                    text += String(decoding: data, as: UTF8.self)
                    log.append(String(decoding: data, as: UTF8.self))
                    if let range = text.range(of: #"listening on http://[^:]+:(\d+)"#, options: .regularExpression) {
                        let port = Int(text[range].split(separator: ":").last ?? "") ?? 0
                        continuation.resume(returning: port)
                        // Keep draining (and keeping) so the child never blocks on a full pipe.
                        while true {
                            let more = process.read(.standardError)
                            if more.isEmpty { break }
                            log.append(String(decoding: more, as: UTF8.self))
                        }
                        return
                    }
                }
            }.start()
        }
    }

    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                process.interrupt()
                process.send(SIGKILL)
                return nil
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return process.terminationStatus
    }
}

@Suite("Graceful shutdown of the real binary", .serialized, .timeLimit(.minutes(3)))
struct ShutdownTests {
    @Test("SIGTERM during 20 in-flight streams: all complete and are persisted, and the process exits 0")
    func sigtermDrainsInFlightStreams() async throws {
        let fixture = try await BinaryFixture.make()
        let repository = fixture.repository
        // One user with 20 replies at once: above the default per-user cap, which this test is not about.
        let service = try await fixture.serve(graceSeconds: 20, extra: ["MAX_ACTIVE_TURNS_PER_USER": "20"])
        let user = UUID()
        var streams: [EventStream] = []
        for index in 0..<20 {
            streams.append(
                try await TestHTTP.openEventStream(
                    port: service.port,
                    json: ServiceHarness.body(
                        "[[stub:slow 100ms x 20]] stream \(index)", user: user, thread: "s\(index)")))
        }
        // Everyone is streaming before the signal arrives.
        var readers = streams.map { $0.reader() }
        var collected: [[ReceivedEvent]] = []
        for index in readers.indices { collected.append(await readers[index].untilFirstChunk()) }
        kill(service.process.processIdentifier, SIGTERM)
        try await Task.sleep(for: .milliseconds(300))
        await #expect(throws: (any Error).self, "new connections are refused during shutdown") {
            _ = try await TestHTTP.request(port: service.port, method: "GET", path: "/health")
        }
        for index in readers.indices { collected[index] += await readers[index].rest() }
        for events in collected {
            #expect(events.last?.isDone == true)
            // All 20 deltas made it (a reader that fell behind on a loaded machine may get some merged in one frame).
            #expect((events.last?.json["usage"] as? [String: Any])?["output_tokens"] as? Int == 20)
        }
        let status = await service.waitForExit(timeout: .seconds(30))
        #expect(status == 0)
        for index in 0..<20 {
            let turns = try await repository.turns(userID: user, threadID: "s\(index)", limit: 5, beforeSeq: nil)
            #expect(turns?.count == 1)
            #expect(turns?.first?.status == .completed)
            #expect(turns?.first?.reply == collected[index].compactMap(\.chunk).joined())
        }
        await fixture.stub.stop()
    }

    @Test("when the grace period runs out, unfinished turns are stored as interrupted with their partial text")
    func graceExpiryInterrupts() async throws {
        let fixture = try await BinaryFixture.make()
        let repository = fixture.repository
        let service = try await fixture.serve(graceSeconds: 1)
        let user = UUID()
        let stream = try await TestHTTP.openEventStream(
            port: service.port,
            json: ServiceHarness.body("[[stub:slow 100ms x 100]] long one", user: user, thread: "long"))
        let turnID = try #require(stream.headers["x-turn-id"].flatMap(UUID.init(uuidString:)))
        var reader = stream.reader()
        var events = await reader.untilFirstChunk()
        kill(service.process.processIdentifier, SIGTERM)
        events += await reader.rest()
        #expect(events.last?.error?["type"] as? String == "interrupted")
        let status = await service.waitForExit(timeout: .seconds(20))
        #expect(status == 0)
        let turn = try #require(try await repository.turn(userID: user, id: turnID))
        #expect(turn.status == .interrupted)
        let streamed = events.compactMap(\.chunk).joined()
        #expect(!streamed.isEmpty)
        #expect(turn.reply == streamed)
        await fixture.stub.stop()
    }
}

/// A PostgreSQL cluster of a test's own, so it can be frozen (SIGSTOP) without touching other tests.
struct PrivateCluster {
    let postgres: EmbeddedPostgres
    let conninfo: String

    static func start(_ name: String) async throws -> PrivateCluster {
        let directory = URL(fileURLWithPath: "/tmp/agent-\(name)-\(UUID().uuidString.prefix(8).lowercased())")
        let postgres = EmbeddedPostgres(
            directory: directory, databaseName: name, extraSettings: ["fsync = off"], logger: .quiet)
        let conninfo = try await postgres.startDetached()
        _ = try await Migrator(conninfo: conninfo, logger: .quiet).run()
        return PrivateCluster(postgres: postgres, conninfo: conninfo)
    }

    /// The postmaster and every backend: what "the database is stalled" means.
    func processIDs() -> [Int32] {
        let pidFile = postgres.directory.appendingPathComponent("data/postmaster.pid").path
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let postmaster = text.split(separator: "\n").first.flatMap({ Int32($0) })
        else { return [] }
        let children = (try? String(contentsOfFile: "/proc/\(postmaster)/task/\(postmaster)/children", encoding: .utf8))?
            .split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? []
        return [postmaster] + children
    }

    func freeze() { for pid in processIDs() { kill(pid, SIGSTOP) } }
    func thaw() { for pid in processIDs() { kill(pid, SIGCONT) } }

    /// Thaws, stops and deletes the cluster on a thread of its own (callable from `defer`).
    func remove() {
        thaw()
        let postgres = postgres
        cleanUpOffPool {
            try? postgres.stop(immediate: true)
            try? FileManager.default.removeItem(at: postgres.directory)
            try? FileManager.default.removeItem(atPath: postgres.directory.path + ".lock")
        }
    }
}

@Suite("Shutdown with the database stalled", .serialized, .timeLimit(.minutes(3)))
struct StalledShutdownTests {
    @Test("SIGTERM with the database stalled exits within the grace period plus a few seconds; the reply is spooled and written at the next start")
    func spoolRoundTrip() async throws {
        let cluster = try await PrivateCluster.start("stall")
        defer { cluster.remove() }
        let stub = ClaudeStub(logger: .quiet)
        try await stub.start(host: "127.0.0.1", port: 0)
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("agent-spool-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: spool) }
        let environment = [
            "DATABASE_URL": cluster.conninfo, "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": stub.baseURL,
            "SPOOL_DIR": spool.path, "PORT": "0", "LOG_LEVEL": "notice", "SHUTDOWN_GRACE_SECONDS": "2",
        ]
        let service = try await ServiceProcess.start(environment: environment)
        let user = UUID()
        let stream = try await TestHTTP.openEventStream(
            port: service.port,
            json: ServiceHarness.body("[[stub:slow 100ms x 10]] keep this reply", user: user, thread: "stall"))
        let turnID = try #require(stream.headers["x-turn-id"].flatMap(UUID.init(uuidString:)))
        var reader = stream.reader()
        var events = await reader.untilFirstChunk()
        cluster.freeze()
        // Claude finishes the reply (1 s); its final write hangs on the frozen database.
        try await Task.sleep(for: .milliseconds(1_500))
        let signalled = ContinuousClock.now
        kill(service.process.processIdentifier, SIGTERM)
        events += await reader.rest()
        let status = await service.waitForExit(timeout: .seconds(30))
        let exitAfter = ContinuousClock.now - signalled
        #expect(status == 0)
        // Grace 2 s, then at most the shutdown write budget and the bounded database close.
        #expect(exitAfter < .seconds(12), "exited \(exitAfter) after SIGTERM")
        #expect(events.last?.error?["type"] as? String == "persistence_delayed")
        let streamed = events.compactMap(\.chunk).joined()
        // All ten deltas were relayed (merged frames possible on a loaded machine); the stored reply is compared below.
        #expect((1...10).contains(events.compactMap(\.chunk).count))
        #expect(!streamed.isEmpty)
        let files = try FileManager.default.contentsOfDirectory(atPath: spool.path).filter { $0.hasSuffix(".json") }
        #expect(files == ["\(turnID.uuidString.lowercased()).json"])
        #expect(service.log.contains("spooled"))

        // The database is back; the next start writes the spooled reply and says so.
        cluster.thaw()
        let restarted = try await ServiceProcess.start(environment: environment)
        #expect(restarted.log.contains("wrote 1 of 1 spooled turn ending(s)"))
        let database = Database(configuration: DatabaseConfiguration(conninfo: cluster.conninfo, poolSize: 1), logger: .quiet)
        let turn = try #require(try await ThreadRepository(database: database).turn(userID: user, id: turnID))
        #expect(turn.status == .completed)
        #expect(turn.reply == streamed)
        #expect(try FileManager.default.contentsOfDirectory(atPath: spool.path).filter { $0.hasSuffix(".json") }.isEmpty)
        kill(restarted.process.processIdentifier, SIGTERM)
        #expect(await restarted.waitForExit(timeout: .seconds(20)) == 0)
        await database.close()
        await stub.stop()
    }
}
