import Claude
import ClaudeStub
import Foundation
import Logging
import Synchronization
import SupabaseAuth
import ThreadStore
import Tools

/// The parts every entry point needs, assembled from configuration: database, Claude (or the offline stub), the
/// supervisor and the agent. `serve` adds HTTP on top; the CLI uses it directly, in process.
final class AgentRuntime: Sendable {
    let configuration: ServiceConfiguration
    let database: Database
    let repository: ThreadRepository
    let claude: ClaudeClient
    let stub: ClaudeStub?
    let supervisor: TurnSupervisor
    /// Renews running turns' leases and sweeps expired ones (a service of `serve`'s group).
    let leaseKeeper: LeaseKeeper
    /// Resume and stop across instances (a service of `serve`'s group).
    let relay: TurnRelay
    let metrics: ServiceMetrics
    let agent: Agent
    /// The tools Claude may call: the configured MCP servers' and the built-in ones.
    let tools: ToolRegistry
    let logger: Logger
    let databaseDescription: String
    /// Verifies access tokens; nil in development mode (no Supabase auth configured).
    let verifier: TokenVerifier?
    /// The libcurl client that fetches the JWKS (not Claude's, so a slow key fetch never queues behind replies).
    private let authClient: HTTPClient?
    /// The supervisor's run outside `serve` (see `runTurns()`).
    private let background = Mutex<Task<Void, Never>?>(nil)

    /// Opens the database (starting the embedded cluster when `DATABASE_URL` is unset) and Claude.
    static func start(
        configuration: ServiceConfiguration, environment: AppEnvironment, logger: Logger
    ) async throws -> AgentRuntime {
        let (database, description) = try await openDatabase(
            environment: environment, logger: logger, poolSize: configuration.databasePoolSize,
            migrate: configuration.autoMigrate,
            statementTimeout: .seconds(configuration.databaseStatementTimeoutSeconds),
            acquireTimeout: .seconds(configuration.databaseAcquireTimeoutSeconds))
        return try await start(
            configuration: configuration, database: database, databaseDescription: description, logger: logger)
    }

    /// Assembles a runtime around an open database (tests bring their own).
    static func start(
        configuration: ServiceConfiguration, database: Database, databaseDescription: String, logger: Logger
    ) async throws -> AgentRuntime {
        var stub: ClaudeStub?
        let claudeConfiguration: ClaudeConfiguration
        if let key = configuration.anthropicAPIKey {
            claudeConfiguration = ClaudeConfiguration(apiKey: key, baseURL: configuration.anthropicBaseURL)
        } else {
            var stubConfiguration = StubConfiguration()
            stubConfiguration.deltaInterval = .milliseconds(configuration.offlineStubDeltaIntervalMs)
            stubConfiguration.honorsDirectives = configuration.offlineStubDirectives
            var stubLogger = logger
            stubLogger.logLevel = max(logger.logLevel, .warning)
            let offline = ClaudeStub(configuration: stubConfiguration, logger: stubLogger)
            try await offline.start(host: "127.0.0.1", port: 0)
            stub = offline
            claudeConfiguration = ClaudeConfiguration(apiKey: "offline-stub", baseURL: offline.baseURL)
        }
        var tuned = claudeConfiguration
        // Retries before the first token are the turn's decision (`TurnMachine`), so a Stop or a shutdown can end the
        // wait between attempts; the client itself makes one attempt per call.
        tuned.maxRetries = 0
        tuned.idleTimeout = .seconds(configuration.claudeIdleTimeoutSeconds)
        tuned.retryDelayScale = configuration.claudeRetryDelayScale
        let claude = ClaudeClient(configuration: tuned, logger: logger)
        let repository = ThreadRepository(database: database)
        let metrics = ServiceMetrics()
        let lease = Duration.seconds(configuration.leaseSeconds)
        let supervisor = TurnSupervisor(
            pingInterval: .seconds(configuration.pingIntervalSeconds), maxTurns: configuration.maxActiveTurns,
            maxTurnsPerUser: configuration.maxActiveTurnsPerUser, logger: logger)
        let spool = ReplySpool(directory: URL(fileURLWithPath: configuration.spoolDirectory), logger: logger)
        let flushed = await spool.flush(into: repository)
        if flushed.pending > 0 {
            logger.notice(
                "wrote \(flushed.written) of \(flushed.pending) spooled turn ending(s) from an earlier run (\(spool.directory.path)) to the database"
            )
        }
        let leaseKeeper = LeaseKeeper(
            supervisor: supervisor, repository: repository, spool: spool, lease: lease, metrics: metrics,
            logger: logger)
        var listenConfiguration = database.configuration
        listenConfiguration.conninfo = configuration.databaseListenURL ?? database.configuration.conninfo
        listenConfiguration.poolSize = 1
        let relay = try TurnRelay(
            database: database, listenConfiguration: listenConfiguration, supervisor: supervisor,
            repository: repository, metrics: metrics, pingInterval: .seconds(configuration.pingIntervalSeconds),
            logger: logger)
        let tools = try await startTools(configuration: configuration, repository: repository, logger: logger)
        let agent = Agent(
            repository: repository, claude: claude,
            prompt: PromptBuilder(
                systemPrompt: configuration.systemPrompt, model: configuration.model,
                maxTokens: configuration.maxTokens, contextBudgetTokens: configuration.contextBudgetTokens,
                tools: tools.registry.definitions.map {
                    ToolSpec(name: $0.name, description: $0.description, inputSchema: $0.inputSchema)
                },
                thinkingBudget: configuration.thinkingBudget),
            supervisor: supervisor, metrics: metrics, logger: logger, historyTurns: configuration.historyTurns,
            lease: lease, spool: spool,
            turnRules: TurnMachine.Configuration(
                upstreamRetry: RetryPolicy(
                    maxRetries: configuration.claudeMaxRetries, delayScale: configuration.claudeRetryDelayScale),
                persistRetryFor: .seconds(configuration.persistRetrySeconds),
                maxToolRounds: configuration.maxToolRounds),
            relay: relay, pingInterval: .seconds(configuration.pingIntervalSeconds),
            tools: tools.registry, toolDeadline: tools.deadline, toolOutputLimit: configuration.toolOutputMaxBytes)
        let (verifier, authClient) = await makeVerifier(configuration: configuration, logger: logger)
        return AgentRuntime(
            configuration: configuration, database: database, repository: repository, claude: claude, stub: stub,
            supervisor: supervisor, leaseKeeper: leaseKeeper, relay: relay, metrics: metrics, agent: agent,
            tools: tools.registry, logger: logger,
            databaseDescription: databaseDescription, verifier: verifier, authClient: authClient)
    }

    /// Starts the MCP servers of `TOOLS_CONFIG` and the built-in tools; the deadline is the longest a call is waited
    /// for (the slowest server's own timeout, plus a moment; at least 30 s).
    private static func startTools(
        configuration: ServiceConfiguration, repository: ThreadRepository, logger: Logger
    ) async throws -> (registry: ToolRegistry, deadline: Duration) {
        var servers = ToolsConfiguration(servers: [])
        if let path = configuration.toolsConfigPath {
            do {
                servers = try ToolsConfiguration(contentsOfFile: path)
            } catch {
                throw ConfigurationError("TOOLS_CONFIG: \(error)")
            }
        }
        let builtins: [any BuiltinTool] = configuration.memorySearch ? [SearchMemoryTool(repository: repository)] : []
        let registry: ToolRegistry
        do {
            registry = try await ToolRegistry.start(configuration: servers, builtins: builtins, logger: logger)
        } catch let error as ToolRegistryError {
            throw ConfigurationError(error.description)
        }
        if !registry.definitions.isEmpty {
            logger.info("tools offered to Claude: \(registry.definitions.map(\.name).joined(separator: ", "))")
        }
        let slowest = servers.servers.map(\.timeout).max() ?? .zero
        return (registry, max(slowest + .seconds(5), .seconds(30)))
    }

    /// The token verifier for the configured Supabase project, with its JWKS prefetched (a failure is only logged:
    /// requests then get 503 `auth_unavailable` until a fetch works).
    private static func makeVerifier(
        configuration: ServiceConfiguration, logger: Logger
    ) async -> (TokenVerifier?, HTTPClient?) {
        guard configuration.authEnabled else { return (nil, nil) }
        let client = configuration.jwksURL.map { _ in
            HTTPClient(configuration: .init(connectTimeout: .seconds(5), idleTimeout: .seconds(5)))
        }
        let verifier = await TokenVerifier(
            configuration: .init(
                jwksURL: configuration.jwksURL, hmacSecret: configuration.supabaseJWTSecret.map { Array($0.utf8) },
                issuer: configuration.expectedIssuer, audience: configuration.authAudience,
                jwksTTL: configuration.authJWKSTTL,
                unknownKeyRefetchInterval: configuration.authUnknownKeyRefetch),
            fetch: { url in
                guard let client else { throw HTTPClientError(kind: .invalidRequest, message: "no JWKS client") }
                let response = try await client.execute(
                    HTTPRequest(method: "GET", url: url, headers: [("Accept", "application/json")]))
                guard response.status == 200 else {
                    response.cancel()
                    throw HTTPClientError(kind: .connection, message: "the JWKS endpoint answered \(response.status)")
                }
                return try await response.collect(upTo: 1 << 20)
            }, logger: logger)
        await verifier.prefetch()
        return (verifier, client)
    }

    private init(
        configuration: ServiceConfiguration, database: Database, repository: ThreadRepository, claude: ClaudeClient,
        stub: ClaudeStub?, supervisor: TurnSupervisor, leaseKeeper: LeaseKeeper, relay: TurnRelay,
        metrics: ServiceMetrics, agent: Agent, tools: ToolRegistry,
        logger: Logger, databaseDescription: String, verifier: TokenVerifier?, authClient: HTTPClient?
    ) {
        self.leaseKeeper = leaseKeeper
        self.relay = relay
        self.configuration = configuration
        self.database = database
        self.repository = repository
        self.claude = claude
        self.stub = stub
        self.supervisor = supervisor
        self.metrics = metrics
        self.agent = agent
        self.tools = tools
        self.logger = logger
        self.databaseDescription = databaseDescription
        self.verifier = verifier
        self.authClient = authClient
    }

    /// Runs the turns outside `serve`'s service group (the CLI, and tests that use the agent directly): one task that
    /// runs the supervisor until `shutdown()`.
    func runTurns() {
        background.withLock { task in
            guard task == nil else { return }
            let supervisor = self.supervisor
            task = Task { await supervisor.runTurns() }
        }
    }

    /// Lets running turns finish (interrupting them after the grace period), then releases Claude, the stub and the
    /// database.
    func shutdown() async {
        supervisor.beginShutdown(grace: .seconds(configuration.shutdownGraceSeconds))
        await supervisor.waitUntilIdle()
        await background.withLock({ $0 })?.value
        await tools.shutdown()
        claude.shutdown()
        authClient?.shutdown()
        await stub?.stop()
        // A pool thread stuck on a stalled database must not hold the exit: whatever it still runs has been spooled.
        let database = self.database
        if await withDeadline(.seconds(2), { await database.close() }) == nil {
            logger.warning("the database did not close within 2 s; exiting anyway")
        }
    }
}
