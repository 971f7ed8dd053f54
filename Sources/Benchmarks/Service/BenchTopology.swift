/// What every service benchmark runs: a throwaway Postgres, `agent-bench stub` and the real `agent-service serve`
/// pointed at both. `stop()` ends them in reverse order.
struct BenchTopology {
    let database: BenchDatabase
    let stub: ChildProcess
    let service: ChildProcess

    /// - Parameters:
    ///   - stubArguments: after `stub` (pacing options).
    ///   - environment: added to the service's (limits, pool size, log level overrides).
    static func start(
        binary: String, benchBinary: String, stubArguments: [String] = [], postgresSettings: [String] = [],
        statementStatistics: Bool = false, environment: [String: String] = [:]
    ) async throws -> BenchTopology {
        let database = try await BenchDatabase.start(
            settings: postgresSettings, statementStatistics: statementStatistics)
        let stub: ChildProcess
        do {
            stub = try await ChildProcess.start(
                executable: benchBinary, arguments: ["stub"] + stubArguments, environment: [:],
                readyPattern: #"stub listening on (\d+)"#)
        } catch {
            database.stop()
            throw error
        }
        do {
            let service = try await startService(
                binary: binary, database: database, stub: stub, environment: environment)
            return BenchTopology(database: database, stub: stub, service: service)
        } catch {
            stub.terminate()
            database.stop()
            throw error
        }
    }

    private static func startService(
        binary: String, database: BenchDatabase, stub: ChildProcess, environment: [String: String]
    ) async throws -> ChildProcess {
        try await ChildProcess.start(
            executable: binary, arguments: ["serve"],
            environment: [
                "DATABASE_URL": database.conninfo, "ANTHROPIC_API_KEY": "bench",
                "ANTHROPIC_BASE_URL": "http://127.0.0.1:\(stub.port)", "PORT": "0", "LOG_LEVEL": "notice",
            ].merging(environment) { $1 },
            readyPattern: #"listening on http://[^:]+:(\d+)"#)
    }

    /// One more `serve` on the same database and stub (another instance); the caller terminates it.
    func startAnotherService(binary: String, environment: [String: String] = [:]) async throws -> ChildProcess {
        try await Self.startService(binary: binary, database: database, stub: stub, environment: environment)
    }

    func stop() {
        service.terminate()
        stub.terminate()
        database.stop()
    }
}
