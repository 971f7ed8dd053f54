import ClaudeStub
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

/// Runs the built binary to completion, recording when each piece of standard output arrived.
struct CommandRun {
    var status: Int32
    var stdout: String
    var stderr: String
    /// (arrival, text) for every read of standard output.
    var pieces: [(ContinuousClock.Instant, String)]
    var started: ContinuousClock.Instant
    var ended: ContinuousClock.Instant

    static func run(_ arguments: [String], environment: [String: String], stdin: String? = nil) async throws
        -> CommandRun
    {
        let started = ContinuousClock.now
        let process = try SpawnedProcess(
            executable: ServiceProcess.binary.path, arguments: arguments,
            environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
                .merging(environment) { $1 },
            currentDirectory: FileManager.default.temporaryDirectory.path,
            standardInput: .bytes(Array((stdin ?? "").utf8)), standardOutput: .pipe, standardError: .pipe)
        return await withCheckedContinuation { continuation in
            Thread {
                var pieces: [(ContinuousClock.Instant, String)] = []
                let errorText = Mutex("")
                let errorRead = DispatchSemaphore(value: 0)
                Thread {
                    let data = process.readAll(.standardError)
                    errorText.withLock { $0 = String(decoding: data, as: UTF8.self) }
                    errorRead.signal()
                }.start()
                while true {
                    let data = process.read(.standardOutput)
                    if data.isEmpty { break }
                    pieces.append((.now, String(decoding: data, as: UTF8.self)))
                }
                let status = process.waitUntilExit()
                let ended = ContinuousClock.now
                errorRead.wait()
                continuation.resume(
                    returning: CommandRun(
                        status: status, stdout: pieces.map(\.1).joined(),
                        stderr: errorText.withLock { $0 }, pieces: pieces, started: started, ended: ended))
            }.start()
        }
    }
}

@Suite("Command line: chat, replay, threads", .serialized, .timeLimit(.minutes(3)))
struct CommandLineTests {
    @Test("piped chat streams replies, stores every turn, and exits 0 at end of input; replay shows them")
    func chatThenReplay() async throws {
        let fixture = try await BinaryFixture.make()
        let user = UUID()
        let chat = try await CommandRun.run(
            ["chat", "--user", user.uuidString, "--thread", "cli-1", "--timezone", "Asia/Tokyo"],
            environment: fixture.environment,
            stdin: "[[stub:slow 150ms x 6]] first question\nsecond question 你好 🙂\n")
        #expect(chat.status == 0, "stderr: \(chat.stderr)")
        // Streaming: the first words were printed well before the process ended.
        let firstPiece = try #require(chat.pieces.first)
        #expect(chat.ended - firstPiece.0 > .milliseconds(500), "output arrived all at once")
        #expect(chat.stdout.contains("second question 你好 🙂"))

        let repository = ThreadRepository(database: fixture.database)
        let turns = try #require(try await repository.turns(userID: user, threadID: "cli-1", limit: 10, beforeSeq: nil))
        #expect(turns.count == 2)
        #expect(turns.allSatisfy { $0.status == .completed })

        let json = try await CommandRun.run(
            ["replay", "cli-1", "--user", user.uuidString, "--format", "json"], environment: fixture.environment)
        #expect(json.status == 0, "stderr: \(json.stderr)")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(document["thread_id"] as? String == "cli-1")
        #expect(document["user_id"] as? String == user.uuidString.lowercased())
        let items = try #require(document["turns"] as? [[String: Any]])
        #expect(items.count == 2)
        for (item, turn) in zip(items, turns) {
            #expect(item["question"] as? String == turn.question)
            #expect(item["reply"] as? String == turn.reply)
            #expect(item["status"] as? String == "completed")
            let usage = try #require(item["usage"] as? [String: Any])
            #expect(usage["output_tokens"] as? Int == turn.usage.outputTokens)
            #expect(usage["input_tokens"] as? Int == turn.usage.inputTokens)
            #expect(item["turn_id"] as? String == turn.id.uuidString.lowercased())
            #expect(item["user_timezone"] as? String == "Asia/Tokyo")
        }

        let text = try await CommandRun.run(
            ["replay", "cli-1", "--user", user.uuidString], environment: fixture.environment)
        #expect(text.status == 0)
        #expect(!text.stdout.contains("\u{1B}["), "piped text output has no escape codes")
        #expect(text.stdout.contains("You: first question") || text.stdout.contains("first question"))
        #expect(text.stdout.contains("Claude: "))
        #expect(text.stdout.contains("Asia/Tokyo"), "times are shown in the zone the user asked from")

        let markdown = try await CommandRun.run(
            ["replay", "cli-1", "--user", user.uuidString, "--format", "markdown"], environment: fixture.environment)
        #expect(markdown.stdout.hasPrefix("# Thread `cli-1`"))
        #expect(markdown.stdout.contains("## Turn 1"))
        #expect(markdown.stdout.contains("### User"))
        #expect(markdown.stdout.contains("### Assistant"))

        let threads = try await CommandRun.run(
            ["threads", "--user", user.uuidString, "--format", "json"], environment: fixture.environment)
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(threads.stdout.utf8)) as? [String: Any])
        let entries = try #require(listed["threads"] as? [[String: Any]])
        #expect(entries.first?["thread_id"] as? String == "cli-1")
        #expect(entries.first?["turn_count"] as? Int == 2)
        await fixture.stub.stop()
    }

    @Test("replay of a missing or foreign thread prints one line and exits 1; a malformed UUID exits 64")
    func replayErrors() async throws {
        let fixture = try await BinaryFixture.make()
        let owner = UUID()
        _ = try await CommandRun.run(
            ["chat", "--user", owner.uuidString, "--thread", "mine"], environment: fixture.environment, stdin: "hello\n"
        )
        let missing = try await CommandRun.run(
            ["replay", "nope", "--user", owner.uuidString], environment: fixture.environment)
        #expect(missing.status == 1)
        #expect(missing.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)
        #expect(missing.stderr.contains("not found"))
        let foreign = try await CommandRun.run(
            ["replay", "mine", "--user", UUID().uuidString], environment: fixture.environment)
        #expect(foreign.status == 1)
        #expect(foreign.stderr.contains("not found"))
        let malformed = try await CommandRun.run(["replay", "mine", "--user", "bob"], environment: fixture.environment)
        #expect(malformed.status == 64)
        #expect(malformed.stderr.contains("--user"))
        #expect(malformed.stderr.contains("Usage"))
        await fixture.stub.stop()
    }

    @Test("replay shows stored escape sequences and bidi overrides as visible text, never raw")
    func replayEscapesControlCharacters() async throws {
        let fixture = try await BinaryFixture.make()
        let user = UUID()
        let hostile = "title \u{1B}]0;pwned\u{07} red \u{1B}[31m bidi \u{202E}txet\u{9B}2J end"
        let turn = try await fixture.repository.beginTurn(
            BeginTurnRequest(userID: user, threadID: "evil", question: hostile))
        guard case .started(let started) = turn else { throw HarnessError("not started") }
        try await fixture.repository.completeTurn(TurnCompletion(turnID: started.turnID, userID: user, reply: hostile))
        for format in ["text", "markdown"] {
            let run = try await CommandRun.run(
                ["replay", "evil", "--user", user.uuidString, "--format", format], environment: fixture.environment)
            #expect(run.status == 0)
            let scalars = run.stdout.unicodeScalars
            #expect(!scalars.contains("\u{1B}"), "\(format)")
            #expect(!scalars.contains("\u{07}"), "\(format)")
            #expect(!scalars.contains("\u{202E}"), "\(format)")
            #expect(!scalars.contains("\u{9B}"), "\(format)")
            #expect(run.stdout.contains(#"\u{1B}]0;pwned\u{7}"#), "\(format): \(run.stdout)")
        }
        // JSON keeps the exact stored text (escaped by JSON itself).
        let json = try await CommandRun.run(
            ["replay", "evil", "--user", user.uuidString, "--format", "json"], environment: fixture.environment)
        #expect(!json.stdout.unicodeScalars.contains("\u{1B}"))
        #expect(json.stdout.contains(#"\u001b"#))
        await fixture.stub.stop()
    }

    @Test("replay --rerun sends the questions again into a new thread and prints a comparison")
    func rerun() async throws {
        let fixture = try await BinaryFixture.make()
        let user = UUID()
        _ = try await CommandRun.run(
            ["chat", "--user", user.uuidString, "--thread", "orig"], environment: fixture.environment,
            stdin: "one\ntwo\n")
        let rerun = try await CommandRun.run(
            ["replay", "orig", "--user", user.uuidString, "--rerun", "--model", "claude-test-model"],
            environment: fixture.environment)
        #expect(rerun.status == 0, "stderr: \(rerun.stderr)")
        #expect(rerun.stdout.contains("old chars"))
        let repository = ThreadRepository(database: fixture.database)
        let threads = try await repository.listThreads(userID: user, limit: 10, before: nil)
        let newThread = try #require(threads.first { $0.id.hasPrefix("orig-rerun-") })
        #expect(rerun.stdout.contains(newThread.id))
        let turns = try #require(
            try await repository.turns(userID: user, threadID: newThread.id, limit: 10, beforeSeq: nil))
        #expect(turns.map(\.question) == ["one", "two"])
        #expect(turns.allSatisfy { $0.status == .completed && !($0.reply ?? "").isEmpty })
        #expect(fixture.stub.receivedRequests.last?.model == "claude-test-model")
        await fixture.stub.stop()
    }
}
