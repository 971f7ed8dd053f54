import Foundation
import TestSupport
import Testing

@testable import ThreadStore

@Suite("Memory search: a user's own earlier turns, never anyone else's", .timeLimit(.minutes(2)))
struct MemorySearchTests {
    let alice = UUID()
    let bob = UUID()

    /// Stores a completed turn (or one left in `status`) and returns its seq.
    @discardableResult
    private func store(
        _ repository: ThreadRepository, _ user: UUID, _ thread: String, _ question: String, _ reply: String,
        status: TurnStatus = .completed
    ) async throws -> Int {
        let turn = try started(
            try await repository.beginTurn(BeginTurnRequest(userID: user, threadID: thread, question: question)))
        switch status {
        case .completed:
            try await repository.completeTurn(TurnCompletion(turnID: turn.turnID, userID: user, reply: reply))
        case .failed:
            try await repository.failTurn(
                TurnFailure(turnID: turn.turnID, userID: user, partialReply: reply, error: "boom"))
        default:
            break
        }
        return turn.seq
    }

    @Test("finds a fact from another thread of the same user, with thread, seq, snippet and rank")
    func findsAFactFromAnotherThread() async throws {
        try await withRepository { repository, _, _ in
            try await store(repository, alice, "pets", "My dog is called Rex", "What a fine name for a dog.")
            try await store(repository, alice, "pets", "He likes the beach", "Dogs often do.")
            try await store(repository, alice, "work", "I work in Berlin", "Berlin is a good city.")
            let matches = try await repository.searchMemory(
                userID: alice, query: "dog rex", excludingThread: "today", limit: 5)
            let first = try #require(matches.first)
            #expect(matches.count == 1)
            #expect(first.threadID == "pets")
            #expect(first.seq == 1)
            #expect(first.threadTitle == "My dog is called Rex")
            #expect(first.snippet.contains("**Rex**"))
            #expect(first.rank > 0)
            #expect(abs(first.createdAt.timeIntervalSinceNow) < 600)

            // Case-insensitive, and the question weighs more than the reply.
            let berlin = try await repository.searchMemory(
                userID: alice, query: "BERLIN", excludingThread: nil, limit: 5)
            #expect(berlin.map(\.threadID) == ["work"])
        }
    }

    @Test("never returns another user's turns, even for the same words and thread id")
    func neverAnotherUsersTurns() async throws {
        try await withRepository { repository, _, _ in
            try await store(repository, bob, "pets", "My secret password is swordfish", "Noted.")
            try await store(repository, alice, "pets", "I like fish", "Swordfish too?")
            let forAlice = try await repository.searchMemory(
                userID: alice, query: "password", excludingThread: nil, limit: 10)
            #expect(forAlice.isEmpty)
            let forBob = try await repository.searchMemory(
                userID: bob, query: "password", excludingThread: nil, limit: 10)
            #expect(forBob.map(\.threadID) == ["pets"])
        }
    }

    @Test("under row-level security an unscoped full-text query sees only the caller's turns")
    func rowSecurityCoversTheSearchColumn() async throws {
        try await withRepository(poolSize: 1) { repository, database, _ in
            try await store(repository, bob, "b", "zebra crossing", "ok")
            try await store(repository, alice, "a", "zebra stripes", "ok")
            let alice = self.alice
            let all = try await database.withConnection {
                try $0.query(
                    "SELECT count(*) FROM turns WHERE search_vector @@ websearch_to_tsquery('simple', 'zebra')")
            }
            #expect(all.int(0, 0) == 2)
            let scoped = try await database.withConnection {
                try $0.asUser(
                    alice,
                    "SELECT user_id FROM turns WHERE search_vector @@ websearch_to_tsquery('simple', 'zebra')")
            }
            #expect(scoped.rows.map { $0[0] } == [alice.uuidString.lowercased()])
        }
    }

    @Test("leaves out the current thread, and turns that did not finish")
    func excludesCurrentThreadAndUnfinishedTurns() async throws {
        try await withRepository { repository, _, _ in
            try await store(repository, alice, "now", "Paris trip plans", "Sounds fun.")
            try await store(repository, alice, "old", "Paris in spring", "Lovely.")
            try await store(repository, alice, "broken", "Paris hotels", "Half a rep", status: .failed)
            try await store(repository, alice, "running", "Paris museums", "", status: .streaming)
            let matches = try await repository.searchMemory(
                userID: alice, query: "paris", excludingThread: "now", limit: 10)
            #expect(matches.map(\.threadID) == ["old"])
        }
    }

    /// Text a user or a model might send; one database for all of them (a fresh database per case would start 16
    /// at once and load the shared test cluster).
    static let hostileQueries = [
        "", "   ", "\"", "\"unterminated", "'; DROP TABLE turns; --", "a & b | !c", "(((", ":*", "-", "or", "\\",
        "rex:*A", "<->", "\u{2028}", "🐕 rex", String(repeating: "rex \"or\" -x & ", count: 700),
    ]

    @Test("hostile query text (quotes, operators, empty, 10 KB) finds nothing or something, and never fails the query")
    func hostileQueries() async throws {
        try await withRepository(poolSize: 1) { repository, database, _ in
            try await store(repository, alice, "pets", "My dog is called Rex", "Fine.")
            for query in Self.hostileQueries {
                let matches = try await repository.searchMemory(
                    userID: alice, query: query, excludingThread: nil, limit: 5)
                #expect(matches.count <= 1, "\(query.prefix(40))")
            }
            let found = try await repository.searchMemory(
                userID: alice, query: "\"called rex\" -cat or zebra", excludingThread: nil, limit: 5)
            #expect(found.map(\.threadID) == ["pets"])
            let turns = try await database.withConnection { try $0.query("SELECT count(*) FROM turns") }
            #expect(turns.int(0, 0) == 1)
        }
    }

    @Test("a NUL byte or a negative limit is refused before the database sees it")
    func invalidArguments() async throws {
        try await withRepository { repository, _, _ in
            await #expect(throws: StoreError.self) {
                try await repository.searchMemory(userID: alice, query: "a\u{0}b", excludingThread: nil, limit: 5)
            }
            await #expect(throws: StoreError.self) {
                try await repository.searchMemory(userID: alice, query: "a", excludingThread: nil, limit: -1)
            }
        }
    }

    @Test("the limit is honoured and bounded")
    func limitIsBounded() async throws {
        try await withRepository { repository, _, _ in
            for index in 0..<60 {
                try await store(repository, alice, "t\(index)", "note number \(index) about kiwis", "kiwis")
            }
            let three = try await repository.searchMemory(
                userID: alice, query: "kiwis", excludingThread: nil, limit: 3)
            #expect(three.count == 3)
            let many = try await repository.searchMemory(
                userID: alice, query: "kiwis", excludingThread: nil, limit: 10_000)
            #expect(many.count == ThreadRepository.maxMemorySearchResults)
            let none = try await repository.searchMemory(
                userID: alice, query: "kiwis", excludingThread: nil, limit: 0)
            #expect(none.isEmpty)
        }
    }

    @Test("a very long reply is stored (its tail beyond the indexed prefix is simply not searched)")
    func longReplyIsStored() async throws {
        try await withRepository { repository, _, _ in
            let reply = "start " + String(repeating: "lorem ipsum dolor sit amet ", count: 40_000) + " finaltoken"
            try await store(repository, alice, "long", "tell me a long story", reply)
            let start = try await repository.searchMemory(
                userID: alice, query: "start", excludingThread: nil, limit: 5)
            #expect(start.map(\.threadID) == ["long"])
            let tail = try await repository.searchMemory(
                userID: alice, query: "finaltoken", excludingThread: nil, limit: 5)
            #expect(tail.isEmpty)
        }
    }
}
