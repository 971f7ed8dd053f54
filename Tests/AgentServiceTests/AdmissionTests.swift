import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

private func turnCount(_ service: ServiceHarness) async throws -> Int {
    try await service.runtime.database.withConnection { try $0.query("SELECT count(*) FROM turns") }.int(0, 0) ?? -1
}

@Suite("Hardening: turns are admitted, the stub obeys, public addresses are guarded", .timeLimit(.minutes(3)))
struct AdmissionTests {
    /// Replies that take about four seconds, so turns overlap even on a loaded machine.
    static let slow = StubConfiguration(deltaInterval: .milliseconds(100), deltaCount: 40)

    @Test("past MAX_ACTIVE_TURNS_PER_USER a user gets 429 too_many_turns with Retry-After and nothing written; others go on")
    func perUserCap() async throws {
        try await ServiceHarness.run(stub: Self.slow, configure: { $0.maxActiveTurnsPerUser = 2 }) { service in
            let alice = UUID()
            let first = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("one", user: alice, thread: "a"))
            let second = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("two", user: alice, thread: "b"))
            // The second client hangs up at once; its turn still runs and still counts.
            second.close()
            let refused = try await TestHTTP.postJSON(
                port: service.port, path: "/query_stream", json: ServiceHarness.body("three", user: alice, thread: "c"))
            #expect(refused.status == 429)
            #expect((refused.json["error"] as? [String: Any])?["type"] as? String == "too_many_turns")
            #expect(refused.headers["retry-after"] == "5")
            #expect(try await turnCount(service) == 2)
            // Another user is not affected.
            let bob = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("bob", user: UUID(), thread: "a"))
            #expect(bob.status == 200)
            _ = await first.all()
            _ = await bob.all()
            // Once Alice's turns are done, she is admitted again (the abandoned one finished too).
            #expect(try await service.eventually { service.runtime.supervisor.admittedCount == 0 })
            let again = try await service.streamTurn("four", user: alice, thread: "c")
            #expect(again.events.last?.isDone == true)
            let metrics = try await TestHTTP.request(port: service.port, method: "GET", path: "/metrics")
            #expect(metrics.text.contains(#"agent_turns_refused_total{reason="max_active_turns_per_user"} 1"#))
        }
    }

    @Test("past MAX_ACTIVE_TURNS every new turn gets 429 until one ends, abandoned ones included")
    func globalCap() async throws {
        try await ServiceHarness.run(stub: Self.slow, configure: { $0.maxActiveTurns = 3 }) { service in
            var open: [EventStream] = []
            for index in 0..<3 {
                let stream = try await TestHTTP.openEventStream(
                    port: service.port, json: ServiceHarness.body("q\(index)", user: UUID(), thread: "t"))
                #expect(stream.status == 200)
                stream.close()  // every client leaves; the turns run on
                open.append(stream)
            }
            let refused = try await TestHTTP.postJSON(
                port: service.port, path: "/query", json: ServiceHarness.body("over", user: UUID()))
            #expect(refused.status == 429)
            #expect(refused.headers["retry-after"] != nil)
            #expect(try await turnCount(service) == 3)
            #expect(try await service.eventually { service.runtime.supervisor.admittedCount == 0 })
            // The abandoned turns were read to the end and stored.
            let completed = try await service.runtime.database.withConnection {
                try $0.query("SELECT count(*) FROM turns WHERE status = 'completed'")
            }
            #expect(completed.int(0, 0) == 3)
            let admitted = try await TestHTTP.postJSON(
                port: service.port, path: "/query", json: ServiceHarness.body("now", user: UUID()))
            #expect(admitted.status == 200)
        }
    }

    @Test("the offline stub ignores directives unless enabled, and directives are bounded")
    func offlineStubDirectives() async throws {
        let (_, database) = try await TestPostgres.freshDatabase()
        var configuration = ServiceConfiguration()
        configuration.anthropicAPIKey = nil
        configuration.offlineStubDeltaIntervalMs = 0
        let runtime = try await AgentRuntime.start(
            configuration: configuration, database: database, databaseDescription: "test", logger: .quiet)
        runtime.runTurns()
        let user = UUID()
        let handle = try await runtime.agent.startTurn(
            TurnInput(
                userID: user, threadID: "t", question: "[[stub:slow 0ms x 300000000]] hello",
                timeZone: TimeZone(identifier: "UTC")!))
        var chunks = 0
        var text = ""
        for await event in handle.events {
            if case .chunk(let chunk, _) = event {
                chunks += 1
                text += chunk
            }
        }
        // Echoed as text (a handful of words), not 300 million deltas.
        #expect(chunks < 50)
        #expect(text.contains("[[stub:slow"))
        await runtime.shutdown()

        await database.close()

        // Where directives are on (tests), the count is capped.
        try await ServiceHarness.run { service in
            let (_, events) = try await service.streamTurn("[[stub:slow 0ms x 300000000]] hi", user: UUID())
            // Deltas may reach a client merged (a reader that falls behind gets what it missed in one frame), so
            // the stub's count is read from the usage it reports: one output token per delta.
            #expect(events.last?.isDone == true)
            #expect((events.last?.json["usage"] as? [String: Any])?["output_tokens"] as? Int == 10_000)
        }
    }

    @Test("on a public address serve refuses the offline stub unless CLAUDE_OFFLINE_STUB=true, and warns about the embedded database")
    func productionGuards() async throws {
        let fixture = try await BinaryFixture.make()
        var environment = fixture.environment
        environment["ANTHROPIC_API_KEY"] = nil
        environment["ANTHROPIC_BASE_URL"] = nil
        environment.merge(["HOST": "0.0.0.0", "PORT": "0", "SUPABASE_JWT_SECRET": TestKeys.secret]) { $1 }
        let refused = try await CommandRun.run(["serve"], environment: environment)
        #expect(refused.status != 0)
        #expect(refused.stderr.split(separator: "\n").count == 1)
        #expect(refused.stderr.contains("CLAUDE_OFFLINE_STUB"))
        await fixture.stub.stop()
        await fixture.database.close()
    }

    @Test("a ping interval not much shorter than the lease is refused at start-up")
    func pingLeaseConfiguration() throws {
        #expect(throws: ConfigurationError.self) {
            try ServiceConfiguration(
                environment: AppEnvironment(values: ["SSE_PING_SECONDS": "60", "TURN_LEASE_SECONDS": "90"]))
        }
        _ = try ServiceConfiguration(
            environment: AppEnvironment(values: ["SSE_PING_SECONDS": "15", "TURN_LEASE_SECONDS": "30"]))
    }
}
