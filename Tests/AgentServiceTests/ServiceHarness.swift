import ClaudeStub
import Foundation
import Logging
import TestSupport
import ThreadStore

@testable import AgentService

/// A real `agent-service serve` in this process: a fresh Postgres database, a Claude stub on loopback, the HTTP
/// server on an ephemeral port.
struct ServiceHarness: Sendable {
    let port: Int
    let runtime: AgentRuntime
    let stub: ClaudeStub
    let controller: ServiceController
    let conninfo: String
    let serving: Task<Void, any Error>

    var repository: ThreadRepository { runtime.repository }

    static func start(
        stub stubConfiguration: StubConfiguration = StubConfiguration(),
        database given: (conninfo: String, database: Database)? = nil,
        configure: (inout ServiceConfiguration) -> Void = { _ in }
    ) async throws -> ServiceHarness {
        let (conninfo, database): (String, Database)
        if let given {
            (conninfo, database) = given
        } else {
            (conninfo, database) = try await TestPostgres.freshDatabase()
        }
        let stub = ClaudeStub(configuration: stubConfiguration, logger: .quiet)
        try await stub.start(host: "127.0.0.1", port: 0)
        var configuration = ServiceConfiguration()
        configuration.port = 0
        configuration.anthropicAPIKey = "test-key"
        configuration.anthropicBaseURL = stub.baseURL
        configuration.claudeRetryDelayScale = 0.01
        configuration.claudeIdleTimeoutSeconds = 2
        configuration.shutdownGraceSeconds = 10
        configuration.spoolDirectory = FileManager.default.temporaryDirectory
            .appendingPathComponent("agent-spool-\(UUID().uuidString)").path
        configure(&configuration)
        let logger = Logger.quiet
        let runtime = try await AgentRuntime.start(
            configuration: configuration, database: database, databaseDescription: "test database", logger: logger)
        let (ready, readyContinuation) = AsyncStream<(Int, ServiceController)>.makeStream()
        let serving = Task {
            try await ServeCommand.serve(runtime: runtime, logger: logger, handleSignals: false) { port, controller in
                readyContinuation.yield((port, controller))
                readyContinuation.finish()
            }
        }
        var iterator = ready.makeAsyncIterator()
        guard let (port, controller) = await iterator.next() else { throw HarnessError("service did not start") }
        return ServiceHarness(
            port: port, runtime: runtime, stub: stub, controller: controller, conninfo: conninfo, serving: serving)
    }

    /// Runs `body` against a fresh service and always shuts it down afterwards.
    static func run(
        stub stubConfiguration: StubConfiguration = StubConfiguration(),
        database: (conninfo: String, database: Database)? = nil,
        configure: (inout ServiceConfiguration) -> Void = { _ in },
        _ body: (ServiceHarness) async throws -> Void
    ) async throws {
        let service = try await start(stub: stubConfiguration, database: database, configure: configure)
        do {
            try await body(service)
        } catch {
            await service.stop()
            throw error
        }
        await service.stop()
    }

    /// Graceful shutdown, then waits for the service to return.
    func stop() async {
        controller.requestShutdown()
        _ = try? await serving.value
        await stub.stop()
    }

    /// A JSON body for the query endpoints.
    static func body(
        _ question: String, user: UUID, thread: String? = nil, timeZone: String = "Europe/Berlin"
    ) -> [String: any Sendable] {
        var body: [String: any Sendable] = [
            "question": question, "user_id": user.uuidString.lowercased(), "user_timezone": timeZone,
        ]
        if let thread { body["thread_id"] = thread }
        return body
    }

    /// Streams one turn to the end and returns its events.
    func streamTurn(
        _ question: String, user: UUID, thread: String? = nil, headers: [String: String] = [:]
    ) async throws -> (stream: EventStream, events: [ReceivedEvent]) {
        let stream = try await TestHTTP.openEventStream(
            port: port, json: Self.body(question, user: user, thread: thread), headers: headers)
        return (stream, await stream.all())
    }

    /// Polls until `condition` holds or `timeout` passes.
    func eventually(
        timeout: Duration = .seconds(10), _ condition: @Sendable () async throws -> Bool
    ) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension Logger {
    /// Errors only, so test output stays readable (expected failures log warnings).
    static var quiet: Logger {
        var logger = Logger(label: "test")
        logger.logLevel = .error
        return logger
    }
}


/// A fresh database and a Claude stub for running the real binary, with the environment that points it at them.
struct BinaryFixture {
    let conninfo: String
    let database: Database
    let stub: ClaudeStub

    var repository: ThreadRepository { ThreadRepository(database: database) }

    /// A spool folder of this fixture's own.
    let spoolDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("agent-spool-\(UUID().uuidString)")

    var environment: [String: String] {
        [
            "DATABASE_URL": conninfo, "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": stub.baseURL,
            "SPOOL_DIR": spoolDirectory.path,
        ]
    }

    static func make() async throws -> BinaryFixture {
        let (conninfo, database) = try await TestPostgres.freshDatabase()
        let stub = ClaudeStub(logger: .quiet)
        try await stub.start(host: "127.0.0.1", port: 0)
        return BinaryFixture(conninfo: conninfo, database: database, stub: stub)
    }

    /// Starts `agent-service serve` against this fixture.
    func serve(graceSeconds: Int, extra: [String: String] = [:]) async throws -> ServiceProcess {
        try await ServiceProcess.start(
            environment: environment.merging([
                "PORT": "0", "LOG_LEVEL": "notice", "SHUTDOWN_GRACE_SECONDS": "\(graceSeconds)",
            ]) { $1 }.merging(extra) { $1 })
    }
}
