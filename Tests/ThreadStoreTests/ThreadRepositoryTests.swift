import Foundation
import TestSupport
import Testing
import ThreadStore

/// A repository on a fresh migrated database; closes the pool after `body`.
func withRepository<T>(
    poolSize: Int = 4, _ body: (ThreadRepository, Database, String) async throws -> T
) async throws -> T {
    let (conninfo, database) = try await TestPostgres.freshDatabase(poolSize: poolSize)
    do {
        let value = try await body(ThreadRepository(database: database), database, conninfo)
        await database.close()
        return value
    } catch {
        await database.close()
        throw error
    }
}

func started(_ result: BeginTurnResult, sourceLocation: SourceLocation = #_sourceLocation) throws -> StartedTurn {
    guard case .started(let turn) = result else {
        Issue.record("expected a started turn, got \(result)", sourceLocation: sourceLocation)
        throw UnexpectedOutcome()
    }
    return turn
}

struct UnexpectedOutcome: Error {}

@Suite(.timeLimit(.minutes(2))) struct ThreadRepositoryTests {
    let alice = UUID()
    let bob = UUID()

    @Test("a turn begins, completes, and comes back with its reply, usage and timings")
    func beginAndComplete() async throws {
        try await withRepository { repository, database, _ in
            let before = database.statistics.roundTrips
            let begin = try started(
                try await repository.beginTurn(BeginTurnRequest(userID: alice, threadID: "t1", question: "Hello?")))
            #expect(database.statistics.roundTrips - before <= 2)
            #expect(begin.seq == 1)
            #expect(begin.threadCreated)
            #expect(begin.history.isEmpty)

            let streaming = try #require(try await repository.turn(userID: alice, id: begin.turnID))
            #expect(streaming.status == .streaming)
            #expect(streaming.question == "Hello?")

            let beforeComplete = database.statistics.roundTrips
            let usage = TokenUsage(
                inputTokens: 10, outputTokens: 20, cacheCreationInputTokens: 3, cacheReadInputTokens: 4)
            let wrote = try await repository.completeTurn(
                TurnCompletion(
                    turnID: begin.turnID, userID: alice, reply: "Hi!", model: "claude-x", stopReason: "end_turn",
                    usage: usage, firstTokenMs: 120, latencyMs: 900))
            #expect(wrote)
            #expect(database.statistics.roundTrips - beforeComplete == 1)

            let turn = try #require(try await repository.turn(userID: alice, id: begin.turnID))
            #expect(turn.status == .completed)
            #expect(turn.reply == "Hi!")
            #expect(turn.usage == usage)
            #expect(turn.model == "claude-x")
            #expect(turn.stopReason == "end_turn")
            #expect(turn.firstTokenMs == 120)
            #expect(turn.latencyMs == 900)
            #expect(turn.finishedAt != nil)
            #expect(abs(turn.startedAt.timeIntervalSinceNow) < 60)
        }
    }

    @Test("two concurrent begins on one thread: exactly one starts, the other is thread busy")
    func concurrentBegins() async throws {
        try await withRepository { repository, _, _ in
            for round in 0..<5 {
                let thread = "race-\(round)"
                let outcomes = await withTaskGroup(of: Result<BeginTurnResult, any Error>.self) { group in
                    for index in 0..<2 {
                        group.addTask {
                            do {
                                return .success(
                                    try await repository.beginTurn(
                                        BeginTurnRequest(userID: alice, threadID: thread, question: "q\(index)")))
                            } catch {
                                return .failure(error)
                            }
                        }
                    }
                    var all: [Result<BeginTurnResult, any Error>] = []
                    for await outcome in group { all.append(outcome) }
                    return all
                }
                let successes = outcomes.filter { if case .success = $0 { true } else { false } }
                let busy = outcomes.filter {
                    if case .failure(let error as StoreError) = $0 { error.code == .threadBusy } else { false }
                }
                #expect(successes.count == 1)
                #expect(busy.count == 1)
            }
        }
    }

    @Test("a second begin while a turn streams is thread busy; after completion the thread is usable again")
    func busyThenFree() async throws {
        try await withRepository { repository, _, _ in
            let first = try started(try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "1")))
            await #expect(throws: StoreError.self) {
                try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "2"))
            }
            do {
                _ = try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "2"))
            } catch let error as StoreError {
                #expect(error.code == .threadBusy)
                #expect(!error.isTransient)
            }
            try await repository.completeTurn(TurnCompletion(turnID: first.turnID, userID: alice, reply: "one"))
            let second = try started(try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "2")))
            #expect(second.seq == 2)
            #expect(!second.threadCreated)
            #expect(second.history.map(\.question) == ["1"])
        }
    }

    @Test("a streaming turn with an expired lease is marked interrupted and the thread is usable again")
    func expiredLeaseRecovered() async throws {
        try await withRepository { repository, _, _ in
            let stale = try started(
                try await repository.beginTurn(
                    .init(userID: alice, threadID: "t", question: "will die", lease: .milliseconds(50))))
            try await Task.sleep(for: .milliseconds(150))
            let next = try started(
                try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "again")))
            #expect(next.recoveredTurnIDs == [stale.turnID])
            #expect(next.seq == 2)
            #expect(next.history.map(\.id) == [stale.turnID])
            #expect(next.history.first?.status == .interrupted)
            let recovered = try #require(try await repository.turn(userID: alice, id: stale.turnID))
            #expect(recovered.status == .interrupted)
            // A renewal on the interrupted turn reports the lost lease.
            do {
                try await repository.renewLease(turnID: stale.turnID, userID: alice, lease: .seconds(60))
                Issue.record("renewing an interrupted turn should fail")
            } catch let error as StoreError {
                #expect(error.code == .leaseLost)
            }
            try await repository.renewLease(turnID: next.turnID, userID: alice, lease: .seconds(60))
        }
    }

    @Test("completing the same turn twice writes once; the second call returns false and changes nothing")
    func completeIsIdempotent() async throws {
        try await withRepository { repository, _, _ in
            let begin = try started(try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "q")))
            #expect(try await repository.completeTurn(.init(turnID: begin.turnID, userID: alice, reply: "first")))
            let afterFirst = try #require(try await repository.turn(userID: alice, id: begin.turnID))
            #expect(!(try await repository.completeTurn(.init(turnID: begin.turnID, userID: alice, reply: "second"))))
            #expect(!(try await repository.failTurn(.init(turnID: begin.turnID, userID: alice, error: "late"))))
            let afterSecond = try #require(try await repository.turn(userID: alice, id: begin.turnID))
            #expect(afterSecond == afterFirst)
            #expect(afterSecond.reply == "first")
            await #expect(throws: StoreError.self) {
                try await repository.completeTurn(.init(turnID: UUID(), userID: alice, reply: "x"))
            }
        }
    }

    @Test("a failed turn keeps its partial reply and error; failing twice writes once")
    func failKeepsPartial() async throws {
        try await withRepository { repository, _, _ in
            let begin = try started(try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "q")))
            #expect(
                try await repository.failTurn(
                    .init(
                        turnID: begin.turnID, userID: alice, status: .failed, partialReply: "half", error: "overloaded")
                ))
            #expect(!(try await repository.failTurn(.init(turnID: begin.turnID, userID: alice, error: "again"))))
            let turn = try #require(try await repository.turn(userID: alice, id: begin.turnID))
            #expect(turn.status == .failed)
            #expect(turn.reply == "half")
            #expect(turn.error == "overloaded")
        }
    }

    @Test("user A cannot read, list, complete or delete user B's thread; both may use the same thread id")
    func usersAreIsolated() async throws {
        try await withRepository { repository, _, _ in
            let bobs = try started(
                try await repository.beginTurn(.init(userID: bob, threadID: "test", question: "bob's")))
            #expect(try await repository.turns(userID: alice, threadID: "test", limit: 10, beforeSeq: nil) == nil)
            #expect(try await repository.turn(userID: alice, id: bobs.turnID) == nil)
            #expect(try await repository.listThreads(userID: alice, limit: 10, before: nil).isEmpty)
            #expect(!(try await repository.deleteThread(userID: alice, threadID: "test")))
            await #expect(throws: StoreError.self) {
                try await repository.completeTurn(.init(turnID: bobs.turnID, userID: alice, reply: "hijack"))
            }
            // Alice's own thread "test" is independent of Bob's streaming one.
            let alices = try started(
                try await repository.beginTurn(.init(userID: alice, threadID: "test", question: "alice's")))
            #expect(alices.threadCreated)
            #expect(alices.history.isEmpty)
            #expect(
                try await repository.turns(userID: bob, threadID: "test", limit: 10, beforeSeq: nil)?.map(\.question)
                    == ["bob's"])
            // While Bob's reply streams, his thread cannot be deleted; once it is stored, it can.
            await #expect(throws: StoreError.self) { try await repository.deleteThread(userID: bob, threadID: "test") }
            try await repository.completeTurn(.init(turnID: bobs.turnID, userID: bob, reply: "done"))
            #expect(try await repository.deleteThread(userID: bob, threadID: "test"))
            #expect(try await repository.turn(userID: bob, id: bobs.turnID) == nil)
            #expect(try await repository.turn(userID: alice, id: alices.turnID) != nil)
        }
    }

    @Test("multi-byte text (emoji with ZWJ, CJK, RTL, combining marks) round-trips byte-exact")
    func unicodeRoundTrip() async throws {
        try await withRepository { repository, _, _ in
            let samples = [
                "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 tone",
                "漢字かなカナ 한국어 中文",
                "مرحبا بالعالم — שלום עולם",
                "e\u{301} a\u{308}\u{323} Z̷̢͓a̵l̶g̸o",
                "tab\tnewline\ncrlf\r\nquote' \" backslash \\ dollar $1",
            ]
            for (index, text) in samples.enumerated() {
                let thread = "ü-\(index)-🧵"
                let begin = try started(
                    try await repository.beginTurn(.init(userID: alice, threadID: thread, question: text)))
                try await repository.completeTurn(.init(turnID: begin.turnID, userID: alice, reply: text + text))
                let turn = try #require(
                    try await repository.turns(userID: alice, threadID: thread, limit: 5, beforeSeq: nil)?.first)
                #expect(Array(turn.question.utf8) == Array(text.utf8))
                #expect(Array((turn.reply ?? "").utf8) == Array((text + text).utf8))
                #expect(turn.threadID == thread)
            }
        }
    }

    @Test("text with a NUL byte is rejected naming the field, and nothing is written")
    func nulRejected() async throws {
        try await withRepository { repository, database, _ in
            let before = database.statistics.roundTrips
            do {
                _ = try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "bad\u{0}text"))
                Issue.record("a NUL byte must be rejected")
            } catch let error as StoreError {
                #expect(error.code == .invalidText)
                #expect(error.message == "question contains a NUL byte (U+0000), which Postgres text cannot store")
            }
            #expect(database.statistics.roundTrips == before)
            #expect(try await repository.listThreads(userID: alice, limit: 10, before: nil).isEmpty)

            let begin = try started(try await repository.beginTurn(.init(userID: alice, threadID: "t", question: "ok")))
            await #expect(throws: StoreError.self) {
                try await repository.completeTurn(.init(turnID: begin.turnID, userID: alice, reply: "a\u{0}b"))
            }
            #expect(try await repository.turn(userID: alice, id: begin.turnID)?.status == .streaming)
        }
    }

    @Test("a duplicate idempotency key returns the same turn and inserts no second row")
    func idempotencyKey() async throws {
        try await withRepository { repository, _, _ in
            let first = try started(
                try await repository.beginTurn(
                    .init(userID: alice, threadID: "t", question: "q", idempotencyKey: "k-1")))
            let again = try await repository.beginTurn(
                .init(userID: alice, threadID: "t", question: "q", idempotencyKey: "k-1"))
            guard case .duplicate(let existing) = again else {
                Issue.record("expected a duplicate, got \(again)")
                return
            }
            #expect(existing.id == first.turnID)
            #expect(existing.status == .streaming)
            // Same key on another thread is still the same turn; no thread gets created for it.
            let elsewhere = try await repository.beginTurn(
                .init(userID: alice, threadID: "other", question: "q", idempotencyKey: "k-1"))
            if case .duplicate(let turn) = elsewhere {
                #expect(turn.id == first.turnID)
            } else {
                Issue.record("expected duplicate")
            }
            #expect(try await repository.turns(userID: alice, threadID: "t", limit: 10, beforeSeq: nil)?.count == 1)
            #expect(try await repository.listThreads(userID: alice, limit: 10, before: nil).map(\.id) == ["t"])
            // Another user may use the same key.
            _ = try started(
                try await repository.beginTurn(.init(userID: bob, threadID: "t", question: "q", idempotencyKey: "k-1")))
            #expect(try await repository.turn(userID: alice, idempotencyKey: "k-1")?.id == first.turnID)
        }
    }

    @Test("concurrent begins with the same idempotency key yield one turn and duplicates")
    func concurrentIdempotency() async throws {
        try await withRepository { repository, _, _ in
            let results = try await withThrowingTaskGroup(of: BeginTurnResult.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        try await repository.beginTurn(
                            .init(userID: alice, threadID: "t", question: "q", idempotencyKey: "same"))
                    }
                }
                var all: [BeginTurnResult] = []
                for try await result in group { all.append(result) }
                return all
            }
            var startedIDs: [UUID] = []
            var duplicateIDs: [UUID] = []
            for result in results {
                switch result {
                case .started(let turn): startedIDs.append(turn.turnID)
                case .duplicate(let turn): duplicateIDs.append(turn.id)
                }
            }
            #expect(startedIDs.count == 1)
            #expect(Set(duplicateIDs) == Set(startedIDs))
        }
    }

    @Test("history from beginTurn is oldest first, limited, and excludes the new turn")
    func historyOrder() async throws {
        try await withRepository { repository, _, _ in
            for index in 1...5 {
                let begin = try started(
                    try await repository.beginTurn(
                        .init(userID: alice, threadID: "h", question: "q\(index)", historyLimit: 3)))
                #expect(begin.seq == index)
                #expect(begin.history.map(\.question) == (max(1, index - 3)..<index).map { "q\($0)" })
                try await repository.completeTurn(.init(turnID: begin.turnID, userID: alice, reply: "r\(index)"))
            }
        }
    }

    @Test("threads and turns paginate: threads newest first before a date, turns oldest first before a seq")
    func pagination() async throws {
        try await withRepository { repository, _, _ in
            for index in 0..<5 {
                let begin = try started(
                    try await repository.beginTurn(
                        .init(userID: alice, threadID: "p\(index)", question: "Question \(index)")))
                try await repository.completeTurn(.init(turnID: begin.turnID, userID: alice, reply: "r"))
            }
            let firstPage = try await repository.listThreads(userID: alice, limit: 2, before: nil)
            #expect(firstPage.map(\.id) == ["p4", "p3"])
            #expect(firstPage.first?.title == "Question 4")
            #expect(firstPage.first?.turnCount == 1)
            let secondPage = try await repository.listThreads(
                userID: alice, limit: 2, before: firstPage.last?.updatedAt)
            #expect(secondPage.map(\.id) == ["p2", "p1"])
            let lastPage = try await repository.listThreads(userID: alice, limit: 2, before: secondPage.last?.updatedAt)
            #expect(lastPage.map(\.id) == ["p0"])

            for index in 1...6 {
                let begin = try started(
                    try await repository.beginTurn(.init(userID: alice, threadID: "long", question: "q\(index)")))
                try await repository.completeTurn(.init(turnID: begin.turnID, userID: alice, reply: "r\(index)"))
            }
            let newest = try #require(
                try await repository.turns(userID: alice, threadID: "long", limit: 4, beforeSeq: nil))
            #expect(newest.map(\.seq) == [3, 4, 5, 6])
            let older = try #require(
                try await repository.turns(userID: alice, threadID: "long", limit: 4, beforeSeq: 3))
            #expect(older.map(\.seq) == [1, 2])
            #expect(try await repository.turns(userID: alice, threadID: "long", limit: 4, beforeSeq: 1) == [])
        }
    }

    @Test("a long first question becomes a title of about 80 characters")
    func titleTruncated() async throws {
        try await withRepository { repository, _, _ in
            let question = String(repeating: "👩‍💻abc ", count: 60)
            _ = try started(try await repository.beginTurn(.init(userID: alice, threadID: "t", question: question)))
            let title = try #require(
                try await repository.listThreads(userID: alice, limit: 1, before: nil).first?.title)
            #expect(title.count == 81)
            #expect(title.hasSuffix("…"))
        }
    }

    @Test("interruptStreamingTurns marks only streaming turns interrupted")
    func interruptAtShutdown() async throws {
        try await withRepository { repository, _, _ in
            let a = try started(try await repository.beginTurn(.init(userID: alice, threadID: "a", question: "q")))
            let b = try started(try await repository.beginTurn(.init(userID: alice, threadID: "b", question: "q")))
            try await repository.completeTurn(.init(turnID: b.turnID, userID: alice, reply: "done"))
            try await repository.interruptStreamingTurns(ids: [a.turnID, b.turnID], error: "shutting down")
            #expect(try await repository.turn(userID: alice, id: a.turnID)?.status == .interrupted)
            #expect(try await repository.turn(userID: alice, id: a.turnID)?.error == "shutting down")
            #expect(try await repository.turn(userID: alice, id: b.turnID)?.status == .completed)
            // A late full reply still completes an interrupted turn.
            #expect(try await repository.completeTurn(.init(turnID: a.turnID, userID: alice, reply: "late but whole")))
            #expect(try await repository.turn(userID: alice, id: a.turnID)?.status == .completed)
            _ = try started(try await repository.beginTurn(.init(userID: alice, threadID: "a", question: "next")))
        }
    }

    @Test("invalid thread ids are rejected before any I/O")
    func invalidThreadIDs() async throws {
        try await withRepository { repository, database, _ in
            let before = database.statistics.roundTrips
            for bad in ["", String(repeating: "x", count: 129)] {
                do {
                    _ = try await repository.beginTurn(.init(userID: alice, threadID: bad, question: "q"))
                    Issue.record("expected rejection")
                } catch let error as StoreError {
                    #expect(error.code == .invalidArgument)
                }
            }
            #expect(database.statistics.roundTrips == before)
        }
    }
}
