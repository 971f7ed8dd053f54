import Foundation
import Synchronization
import TestSupport
import Testing
import ThreadStore

/// Begin-turn calls that wait for a connection together go to Postgres as one pipeline (`StatementBatcher`): each
/// under its own user's row-level security, each with its own outcome.
@Suite("Group admission: begins that arrive together share a round trip")
struct GroupAdmissionTests {
    @Test("30 users' begins queued behind a busy connection run as one group, each seeing only its own history")
    func groupKeepsUsersApart() async throws {
        try await withRepository(poolSize: 1) { repository, database, _ in
            let users = (0..<30).map { _ in UUID() }
            // Every user has a turn on a thread of the same id, with a reply only that user may see.
            for (index, user) in users.enumerated() {
                let turn = try started(
                    try await repository.beginTurn(BeginTurnRequest(userID: user, threadID: "same", question: "q")))
                try await repository.completeTurn(
                    TurnCompletion(turnID: turn.turnID, userID: user, reply: "secret of user \(index)"))
            }
            let tripsBefore = database.statistics.roundTrips
            let outcomes = Results<Int, Result<StartedTurn, any Error>>()
            try await database.whileHoldingAConnection(seconds: 1) {
                await withTaskGroup(of: Void.self) { group in
                    for (index, user) in users.enumerated() {
                        group.addTask {
                            let outcome: Result<StartedTurn, any Error>
                            do {
                                outcome = .success(
                                    try started(
                                        try await repository.beginTurn(
                                            BeginTurnRequest(userID: user, threadID: "same", question: "again \(index)"))))
                            } catch { outcome = .failure(error) }
                            outcomes.set(index, outcome)
                        }
                    }
                }
            }
            let trips = database.statistics.roundTrips - tripsBefore
            // The hold itself is one; the 30 begins queued behind it are one or a few groups, never 30 round trips.
            #expect(trips <= 4, "30 begins took \(trips) round trips")
            for (index, user) in users.enumerated() {
                let turn = try #require(try outcomes.all[index]?.get())
                #expect(turn.seq == 2)
                #expect(turn.history.map(\.reply) == ["secret of user \(index)"])
                #expect(turn.history.allSatisfy { $0.userID == user })
                let stored = try await repository.turn(userID: user, id: turn.turnID)
                #expect(stored?.question == "again \(index)")
                #expect(stored?.status == .streaming)
            }
        }
    }

    @Test("a busy thread inside a group fails alone with threadBusy; the rest of the group starts and is stored")
    func conflictInsideGroupIsIsolated() async throws {
        try await withRepository(poolSize: 1) { repository, database, _ in
            let busyUser = UUID()
            _ = try started(
                try await repository.beginTurn(BeginTurnRequest(userID: busyUser, threadID: "busy", question: "q")))
            let others = (0..<10).map { _ in UUID() }
            let busyOutcome = Results<Int, any Error>()
            let started = Results<UUID, UUID>()
            try await database.whileHoldingAConnection(seconds: 1) {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            _ = try await repository.beginTurn(
                                BeginTurnRequest(userID: busyUser, threadID: "busy", question: "second"))
                        } catch { busyOutcome.set(0, error) }
                    }
                    for user in others {
                        group.addTask {
                            if case .started(let turn) = try? await repository.beginTurn(
                                BeginTurnRequest(userID: user, threadID: "fresh", question: "hello"))
                            {
                                started.set(user, turn.turnID)
                            }
                        }
                    }
                }
            }
            #expect((busyOutcome.all[0] as? StoreError)?.code == .threadBusy)
            let begun = started.all
            #expect(begun.count == others.count)
            for (user, id) in begun {
                #expect(try await repository.turn(userID: user, id: id)?.status == .streaming)
            }
            // Nothing of the failed begin was written.
            let busyTurns = try await repository.turns(userID: busyUser, threadID: "busy", limit: 10, beforeSeq: nil) ?? []
            #expect(busyTurns.map(\.question) == ["q"])
        }
    }
}

/// Outcomes collected from concurrent tasks.
private final class Results<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let values = Mutex<[Key: Value]>([:])
    func set(_ key: Key, _ value: Value) { values.withLock { $0[key] = value } }
    var all: [Key: Value] { values.withLock { $0 } }
}
