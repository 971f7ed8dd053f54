import ArgumentParser
import ClaudeStub
import Dispatch
import Foundation
import Hummingbird
import HummingbirdCore
import NIOCore
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `agent-service serve`: the HTTP service.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the HTTP service (SSE chat with memory).",
        discussion: """
            Configuration comes from the environment and a .env file in the working directory: HOST, PORT, \
            DATABASE_URL (unset: an embedded PostgreSQL under .agent-service/), ANTHROPIC_API_KEY (unset: the \
            built-in offline Claude stub), ANTHROPIC_BASE_URL, CLAUDE_MODEL, CLAUDE_MAX_TOKENS, \
            CORS_ALLOWED_ORIGINS, SYSTEM_PROMPT / SYSTEM_PROMPT_FILE, LOG_LEVEL, SHUTDOWN_GRACE_SECONDS and the \
            limits listed in the README. SIGTERM or Ctrl-C stops accepting connections, lets running replies \
            finish and persist within the grace period, stores what remains as interrupted, and exits 0.
            """
    )

    @Option(help: "Listen on this host (overrides HOST).")
    var host: String?

    @Option(help: "Listen on this port (overrides PORT; 0 picks a free port).")
    var port: Int?

    func run() async throws {
        let environment: AppEnvironment
        var configuration: ServiceConfiguration
        do {
            environment = try AppEnvironment.current()
            configuration = try ServiceConfiguration(environment: environment)
        } catch {
            CLI.fail("\(error)")
        }
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        if !configuration.authEnabled, !configuration.listensOnLoopback, !configuration.allowUnauthenticated {
            CLI.fail(
                "refusing to listen on \(configuration.host) without authentication: anyone could read or write any user's threads; set SUPABASE_URL or SUPABASE_JWT_SECRET (or ALLOW_UNAUTHENTICATED=true for a trusted network)"
            )
        }
        if configuration.usesOfflineStub, !configuration.listensOnLoopback, !configuration.allowOfflineStubInPublic {
            CLI.fail(
                "refusing to serve the offline stub on \(configuration.host): users would get echo replies stored as real ones; set ANTHROPIC_API_KEY (or CLAUDE_OFFLINE_STUB=true to serve the stub anyway)"
            )
        }
        let logger = CLI.bootstrapLogging(level: configuration.logLevel)
        if configuration.databaseURL == nil, !configuration.listensOnLoopback {
            logger.warning(
                "DATABASE_URL is not set: serving \(configuration.host) from the EMBEDDED local PostgreSQL under .agent-service/ (one machine, no backups); set DATABASE_URL for production"
            )
        }

        let runtime: AgentRuntime
        do {
            runtime = try await AgentRuntime.start(
                configuration: configuration, environment: environment, logger: logger)
        } catch {
            CLI.fail("\(error)")
        }
        try await Self.serve(runtime: runtime, logger: logger)
    }

    /// Runs the HTTP server until SIGTERM/SIGINT (or `controller.requestShutdown()`), then shuts down gracefully.
    ///
    /// - Parameters:
    ///   - handleSignals: Install SIGTERM/SIGINT handlers (the command does; in-process tests do not).
    ///   - onListening: Called with the bound port and the controller once the server accepts connections.
    static func serve(
        runtime: AgentRuntime, logger: Logger, handleSignals: Bool = true,
        onListening: @escaping @Sendable (Int, ServiceController) async -> Void = { _, _ in }
    ) async throws {
        let configuration = runtime.configuration
        if let stub = runtime.stub {
            logger.warning(
                "ANTHROPIC_API_KEY is not set: replies come from the built-in OFFLINE Claude stub (\(stub.baseURL)); set ANTHROPIC_API_KEY for real replies"
            )
        }
        logger.notice("database: \(runtime.databaseDescription)")
        logger.info("memory allocator: \(Allocator.description)")
        if configuration.authEnabled {
            var sources: [String] = []
            if let jwks = configuration.jwksURL { sources.append("JWKS \(jwks) (ES256/RS256)") }
            if configuration.supabaseJWTSecret != nil { sources.append("SUPABASE_JWT_SECRET (HS256)") }
            logger.notice(
                "user identity: verified Supabase access tokens, keys from \(sources.joined(separator: " and ")); issuer \(configuration.expectedIssuer ?? "not checked (set SUPABASE_URL or AUTH_ISSUER)"), audience \(configuration.authAudience)"
            )
        } else {
            logger.warning(
                "user identity: taken from the request's user_id (development mode, no token verification); set SUPABASE_URL or SUPABASE_JWT_SECRET before exposing this service"
            )
        }
        let api = AgentAPI(
            agent: runtime.agent, repository: runtime.repository, database: runtime.database, metrics: runtime.metrics,
            configuration: configuration,
            authenticator: Authenticator(verifier: runtime.verifier, metrics: runtime.metrics, logger: logger),
            logger: logger)
        let controllerBox = Mutex<ServiceController?>(nil)
        let descriptors = OpenFileLimit.raise()
        let needed = configuration.maxConnections + configuration.maxActiveTurns + configuration.databasePoolSize + 64
        if descriptors < needed {
            logger.warning(
                "the open-file limit (\(descriptors)) is below what MAX_CONNECTIONS + MAX_ACTIVE_TURNS may need (\(needed)); lower them or raise the limit (ulimit -n)"
            )
        }
        let app = Application(
            router: api.buildRouter(),
            // The idle timeout closes connections whose request head does not arrive in time (slow or stuck clients)
            // and idle keep-alive connections; a response in progress (a stream) is never cut by it. It runs two seconds
            // or two past the body deadline, so a trickled body gets its 408 before the connection goes.
            server: .http1(
                configuration: .init(
                    idleTimeout: TimeAmount.seconds(Int64(configuration.requestReadTimeoutSeconds + 2)))),
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port), serverName: nil,
                backlog: configuration.listenBacklog,
                availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections, logger: logger)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                logger.notice("listening on http://\(configuration.host):\(port) (model \(configuration.model))")
                if let controller = controllerBox.withLock({ $0 }) { await onListening(port, controller) }
            },
            logger: logger)

        var groupConfiguration = ServiceGroupConfiguration(
            // Stopped in reverse: the HTTP server first, the relay last (turns still running publish to resumers).
            services: [runtime.relay, runtime.supervisor, runtime.leaseKeeper, app], logger: logger)
        // The grace period is enforced by the supervisor; this is only a backstop against a hung service.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(configuration.shutdownGraceSeconds + 15)
        let group = ServiceGroup(configuration: groupConfiguration)
        let controller = ServiceController(
            group: group, supervisor: runtime.supervisor, grace: .seconds(configuration.shutdownGraceSeconds),
            logger: logger)
        controllerBox.withLock { $0 = controller }

        let signals =
            handleSignals
            ? ShutdownSignals { count in
                if count == 1 { controller.requestShutdown() } else { controller.interruptNow() }
            } : nil
        defer { signals?.cancel() }
        try await group.run()
        await runtime.shutdown()
        logger.notice("stopped cleanly")
    }
}

/// Starts a graceful shutdown of a running service: what the first SIGTERM does.
final class ServiceController: Sendable {
    private let group: ServiceGroup
    private let supervisor: TurnSupervisor
    private let grace: Duration
    private let logger: Logger

    init(group: ServiceGroup, supervisor: TurnSupervisor, grace: Duration, logger: Logger) {
        self.group = group
        self.supervisor = supervisor
        self.grace = grace
        self.logger = logger
    }

    /// Stops accepting connections, lets running turns finish within the grace period, then interrupts the rest.
    func requestShutdown() {
        logger.notice("shutting down: no new connections (signal again to interrupt running replies now)")
        supervisor.beginShutdown(grace: grace)
        Task { await group.triggerGracefulShutdown() }
    }

    /// Interrupts every running turn now; each stores its partial reply as `interrupted`.
    func interruptNow() {
        supervisor.interruptAll(reason: "second shutdown signal")
    }
}

/// SIGTERM/SIGINT handling that leaves the decision to us (the first signal drains, a second interrupts).
// @unchecked: `sources` is immutable after init, and dispatch sources are thread-safe.
final class ShutdownSignals: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]

    init(handler: @escaping @Sendable (Int) -> Void) {
        let counter = Counter()
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { handler(counter.next()) }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func cancel() {
        for source in sources { source.cancel() }
    }

    private final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int {
            value.withLock {
                $0 += 1; return $0
            }
        }
    }
}

/// The process's open-file limit.
enum OpenFileLimit {
    /// Raises the soft limit to the hard one (sockets for clients, Claude and Postgres all need descriptors) and
    /// returns the soft limit in effect.
    static func raise() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return Int.max }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
    }
}
