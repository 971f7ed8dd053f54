import ClaudeStub
import Foundation
import Logging
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

/// The built `agent-service` binary, run as a real process.
struct ServiceProcess {
    let process: Process
    let port: Int
    let stderr: Pipe

    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["AGENT_SERVICE_BINARY"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/agent-service")
    }

    static func start(environment: [String: String], arguments: [String] = ["serve"]) async throws -> ServiceProcess {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw HarnessError("\(binary.path) is missing: run `swift build` first (or set AGENT_SERVICE_BINARY)")
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
            .merging(environment) { $1 }
        process.currentDirectoryURL = FileManager.default.temporaryDirectory
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let port = try await Self.listeningPort(stderr.fileHandleForReading)
        return ServiceProcess(process: process, port: port, stderr: stderr)
    }

    /// Reads the log until the "listening on http://host:port" line.
    private static func listeningPort(_ handle: FileHandle) async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                var text = ""
                while true {
                    let data = handle.availableData
                    if data.isEmpty {
                        continuation.resume(throwing: HarnessError("service exited before listening:\n\(text)"))
                        return
                    }
                    text += String(decoding: data, as: UTF8.self)
                    if let range = text.range(of: #"listening on http://[^:]+:(\d+)"#, options: .regularExpression) {
                        let port = Int(text[range].split(separator: ":").last ?? "") ?? 0
                        continuation.resume(returning: port)
                        // Keep draining so the child never blocks on a full pipe.
                        while !handle.availableData.isEmpty {}
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
                kill(process.processIdentifier, SIGKILL)
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
            #expect(events.compactMap(\.chunk).count == 20)
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
