import Foundation
import TestSupport
import Testing
import ThreadStore
import Tools

@Suite("search_memory through the registry: the verified user's other threads only", .timeLimit(.minutes(2)))
struct SearchMemoryToolTests {
    @Test("finds the user's fact from another thread, never another user's, and not the current thread")
    func scopedToUserAndOtherThreads() async throws {
        let (_, database) = try await TestPostgres.freshDatabase(poolSize: 2)
        let repository = ThreadRepository(database: database)
        let alice = UUID()
        let bob = UUID()
        func store(_ user: UUID, _ thread: String, _ question: String) async throws {
            guard
                case .started(let turn) = try await repository.beginTurn(
                    BeginTurnRequest(userID: user, threadID: thread, question: question))
            else { throw SpawnError("turn did not start") }
            try await repository.completeTurn(TurnCompletion(turnID: turn.turnID, userID: user, reply: "Noted."))
        }
        try await store(alice, "garden", "My tomato variety is Black Krim")
        try await store(alice, "today", "Which tomato should I plant?")
        try await store(bob, "garden", "My tomato variety is Sungold")
        let registry = try await ToolRegistry.start(
            configuration: ToolsConfiguration(servers: []), builtins: [SearchMemoryTool(repository: repository)],
            logger: MCPFixtures.logger)
        let definition = try #require(registry.definitions.first)
        #expect(definition.name == "search_memory")

        let outcome = await registry.call(
            name: "search_memory", input: #"{"query":"tomato variety"}"#,
            context: ToolCallContext(userID: alice, threadID: "today"))
        #expect(!outcome.isError)
        #expect(outcome.text.contains("Black Krim"))
        #expect(!outcome.text.contains("Sungold"))
        #expect(!outcome.text.contains("Which tomato"))

        let nothing = await registry.call(
            name: "search_memory", input: #"{"query":"\"unmatched phrase\" -x"}"#, user: alice)
        #expect(nothing == ToolOutcome(text: "No earlier conversation matches.", isError: false))
        let bad = await registry.call(name: "search_memory", input: #"{"q": 1}"#, user: alice)
        #expect(bad.isError)
        await registry.shutdown()
        await database.close()
    }
}
