import Foundation
import Logging

/// Everything `serve` (and the CLI's in-process agent) reads from the environment, validated once at start-up.
///
/// A bad value fails here with one line naming the variable, the value's problem and what is accepted, so an
/// operator never discovers a typo from a stack trace at the first request.
struct ServiceConfiguration: Sendable {
    var host = "127.0.0.1"
    var port = 8000
    /// `DATABASE_URL`; nil selects the embedded local cluster under `.agent-service/`.
    var databaseURL: String?
    /// `DATABASE_LISTEN_URL`: the session for `LISTEN` (resume and stop across instances). Default: `DATABASE_URL`.
    /// Must be a direct or session-mode connection: a transaction-mode pooler never delivers notifications.
    var databaseListenURL: String?
    var databasePoolSize = 8
    /// `DATABASE_STATEMENT_TIMEOUT_SECONDS`: the longest the service waits for one database round trip (the server
    /// gets nine tenths of it as `statement_timeout`); past it the request gets 503 and the connection is replaced.
    var databaseStatementTimeoutSeconds = 5
    /// `DATABASE_ACQUIRE_TIMEOUT_SECONDS`: the longest a request waits for a free pool connection (503 after).
    var databaseAcquireTimeoutSeconds = 5
    /// Apply pending migrations at start-up (always on for the embedded cluster).
    var autoMigrate = true
    /// `ANTHROPIC_API_KEY`; nil selects the built-in offline Claude stub.
    var anthropicAPIKey: String?
    var anthropicBaseURL = "https://api.anthropic.com"
    var model = "claude-sonnet-4-5"
    var maxTokens = 4096
    var claudeMaxRetries = 2
    var claudeIdleTimeoutSeconds = 300
    /// Scales the client's retry delays (tests shorten them; not settable from the environment).
    var claudeRetryDelayScale = 1.0
    var corsAllowedOrigins: [String] = ["http://localhost:3000", "http://localhost:5173"]
    var systemPrompt = ServiceConfiguration.defaultSystemPrompt
    var logLevel: Logger.Level = .info
    /// Largest accepted request body, in bytes (413 above it).
    var maxBodyBytes = 256 * 1024
    /// Longest accepted question, in Unicode scalars.
    var maxQuestionLength = 32_000
    /// How many earlier turns of a thread are loaded for the prompt.
    var historyTurns = 50
    /// Rough input budget for history + question (estimated tokens); older turns beyond it are left out.
    var contextBudgetTokens = 150_000
    var shutdownGraceSeconds = 25
    /// How long a streaming turn holds its thread without renewal; a crashed process's turn is recovered after it.
    var leaseSeconds = 120
    var pingIntervalSeconds = 15
    /// How long a completed reply's write to the database is retried before the turn is given up.
    var persistRetrySeconds = 30
    /// `SUPABASE_URL` (`https://<ref>.supabase.co`, no trailing slash): the JWKS and the expected issuer derive from it.
    var supabaseURL: String?
    /// `SUPABASE_JWT_SECRET`: the legacy HS256 secret (its raw bytes are the HMAC key).
    var supabaseJWTSecret: String?
    /// `AUTH_AUDIENCE`: the `aud` every token must carry.
    var authAudience = "authenticated"
    /// `AUTH_ISSUER`: overrides the issuer derived from `SUPABASE_URL` (custom auth domains).
    var authIssuer: String?
    /// `AUTH_JWKS_TTL_SECONDS`: how long fetched signing keys count as fresh.
    var authJWKSTTL = Duration.seconds(300)
    /// Shortest time between refetches for an unknown `kid` (not settable from the environment; tests shorten it).
    var authUnknownKeyRefetch = Duration.seconds(30)
    /// `SUPABASE_ANON_KEY`: the project's public (anon or publishable) key, handed to the reference page so it can
    /// sign users in with Supabase Auth. Not a secret, but only meaningful with `SUPABASE_URL`.
    var supabaseAnonKey: String?
    /// `WEB_UI`: serve the reference chat page at `/` (and its assets and `/config.json`).
    var webUI = true
    /// `METRICS_TOKEN`: when set, `GET /metrics` requires `Authorization: Bearer <token>`.
    var metricsToken: String?
    /// `ALLOW_UNAUTHENTICATED`: allows development mode (identity from `user_id`) on a non-loopback address.
    var allowUnauthenticated = false
    /// `OFFLINE_STUB_DIRECTIVES`: let `[[stub:…]]` directives in questions steer the offline stub (testing only).
    var offlineStubDirectives = false
    /// `CLAUDE_OFFLINE_STUB`: explicitly allow the offline stub on a non-loopback address.
    var allowOfflineStubInPublic = false
    /// `MAX_ACTIVE_TURNS`: turns running at once in this process (their clients may have left); more get 429.
    var maxActiveTurns = 1_000
    /// `MAX_ACTIVE_TURNS_PER_USER`: turns one user may run at once; more get 429.
    var maxActiveTurnsPerUser = 4
    /// `MAX_CONNECTIONS`: open client connections; beyond it new connections wait in the listen backlog.
    var maxConnections = 4_096
    /// `LISTEN_BACKLOG`: connections the kernel queues before they are accepted (capped by `net.core.somaxconn`).
    /// Hummingbird's default of 256 overflowed under a burst of 1,000 new streams: the dropped handshakes were
    /// retried by the clients' kernels a second later, which was the burst's p99.
    var listenBacklog = 4_096
    /// `REQUEST_READ_TIMEOUT_SECONDS`: a request's head and body must arrive within this; an idle keep-alive
    /// connection is closed after it too.
    var requestReadTimeoutSeconds = 10
    /// `SPOOL_DIR`: where turn endings the database could not take are kept until it can.
    var spoolDirectory = ".agent-service/spool"
    /// Pacing of the offline stub's replies (milliseconds between words), so streaming is visible without a key.
    var offlineStubDeltaIntervalMs = 40
    /// `TOOLS_CONFIG`: a JSON file listing the MCP servers whose tools Claude may call (none by default).
    var toolsConfigPath: String?
    /// `MEMORY_SEARCH`: offer the built-in `search_memory` tool (the user's own earlier threads).
    var memorySearch = true
    /// `MAX_TOOL_ROUNDS`: how many times one turn may run tools.
    var maxToolRounds = 8
    /// `TOOL_OUTPUT_MAX_BYTES`: a tool result is cut to this many bytes before Claude sees it (and it is stored).
    var toolOutputMaxBytes = 100_000
    /// `CLAUDE_THINKING_BUDGET`: extended thinking's token budget; nil (the default) leaves thinking off.
    var thinkingBudget: Int?

    static let defaultSystemPrompt = """
        You are a helpful, concise assistant in a chat application. Answer in the user's language. \
        When the user's local time matters, use the local time given with their message.
        """

    /// Reads and validates the configuration; throws a `ConfigurationError` naming the first bad variable.
    init(environment env: AppEnvironment) throws {
        host = env["HOST"] ?? host
        port = try Self.integer(env, "PORT", default: port, range: 0...65_535)
        databaseURL = env["DATABASE_URL"]
        databaseListenURL = env["DATABASE_LISTEN_URL"]
        databasePoolSize = try Self.integer(env, "DATABASE_POOL_SIZE", default: databasePoolSize, range: 1...64)
        autoMigrate = try Self.boolean(env, "AUTO_MIGRATE", default: autoMigrate)
        databaseStatementTimeoutSeconds = try Self.integer(
            env, "DATABASE_STATEMENT_TIMEOUT_SECONDS", default: databaseStatementTimeoutSeconds, range: 1...600)
        databaseAcquireTimeoutSeconds = try Self.integer(
            env, "DATABASE_ACQUIRE_TIMEOUT_SECONDS", default: databaseAcquireTimeoutSeconds, range: 1...600)
        anthropicAPIKey = env["ANTHROPIC_API_KEY"]
        if let base = env["ANTHROPIC_BASE_URL"] {
            guard let url = URL(string: base), let scheme = url.scheme, ["http", "https"].contains(scheme),
                url.host != nil
            else {
                throw ConfigurationError(
                    "ANTHROPIC_BASE_URL: '\(base)' is not an http(s) URL (e.g. https://api.anthropic.com)")
            }
            anthropicBaseURL = base.hasSuffix("/") ? String(base.dropLast()) : base
        }
        model = env["CLAUDE_MODEL"] ?? model
        maxTokens = try Self.integer(env, "CLAUDE_MAX_TOKENS", default: maxTokens, range: 1...128_000)
        claudeMaxRetries = try Self.integer(env, "CLAUDE_MAX_RETRIES", default: claudeMaxRetries, range: 0...10)
        claudeIdleTimeoutSeconds = try Self.integer(
            env, "CLAUDE_IDLE_TIMEOUT_SECONDS", default: claudeIdleTimeoutSeconds, range: 1...3_600)
        if let origins = env["CORS_ALLOWED_ORIGINS"] {
            corsAllowedOrigins = origins.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
            for origin in corsAllowedOrigins where origin != "*" {
                guard let url = URL(string: origin), url.scheme != nil, url.host != nil,
                    url.path.isEmpty || url.path == "/"
                else {
                    throw ConfigurationError(
                        "CORS_ALLOWED_ORIGINS: '\(origin)' is not an origin (expected scheme://host[:port], comma-separated, or *)"
                    )
                }
            }
        }
        if let prompt = env["SYSTEM_PROMPT"] {
            systemPrompt = prompt
        } else if let file = env["SYSTEM_PROMPT_FILE"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ConfigurationError("SYSTEM_PROMPT_FILE: cannot read '\(file)' as UTF-8 text")
            }
            systemPrompt = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if systemPrompt.unicodeScalars.contains("\u{0}") {
            throw ConfigurationError("SYSTEM_PROMPT: contains a NUL byte")
        }
        if let level = env["LOG_LEVEL"] {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigurationError(
                    "LOG_LEVEL: '\(level)' is not one of trace, debug, info, notice, warning, error, critical")
            }
            logLevel = parsed
        }
        maxBodyBytes = try Self.integer(env, "MAX_BODY_BYTES", default: maxBodyBytes, range: 1_024...(64 << 20))
        maxQuestionLength = try Self.integer(
            env, "MAX_QUESTION_CHARS", default: maxQuestionLength, range: 1...1_000_000)
        historyTurns = try Self.integer(env, "HISTORY_TURNS", default: historyTurns, range: 0...1_000)
        contextBudgetTokens = try Self.integer(
            env, "CONTEXT_BUDGET_TOKENS", default: contextBudgetTokens, range: 1_000...2_000_000)
        shutdownGraceSeconds = try Self.integer(
            env, "SHUTDOWN_GRACE_SECONDS", default: shutdownGraceSeconds, range: 0...3_600)
        leaseSeconds = try Self.integer(env, "TURN_LEASE_SECONDS", default: leaseSeconds, range: 10...3_600)
        pingIntervalSeconds = try Self.integer(env, "SSE_PING_SECONDS", default: pingIntervalSeconds, range: 1...300)
        persistRetrySeconds = try Self.integer(
            env, "PERSIST_RETRY_SECONDS", default: persistRetrySeconds, range: 0...3_600)
        offlineStubDeltaIntervalMs = try Self.integer(
            env, "OFFLINE_STUB_DELTA_MS", default: offlineStubDeltaIntervalMs, range: 0...10_000)
        try readTools(env)
        try readAuth(env)
        spoolDirectory = env["SPOOL_DIR"] ?? spoolDirectory
        offlineStubDirectives = try Self.boolean(env, "OFFLINE_STUB_DIRECTIVES", default: offlineStubDirectives)
        webUI = try Self.boolean(env, "WEB_UI", default: webUI)
        allowOfflineStubInPublic = try Self.boolean(env, "CLAUDE_OFFLINE_STUB", default: allowOfflineStubInPublic)
        maxActiveTurns = try Self.integer(env, "MAX_ACTIVE_TURNS", default: maxActiveTurns, range: 1...100_000)
        maxActiveTurnsPerUser = try Self.integer(
            env, "MAX_ACTIVE_TURNS_PER_USER", default: maxActiveTurnsPerUser, range: 1...10_000)
        maxConnections = try Self.integer(env, "MAX_CONNECTIONS", default: maxConnections, range: 1...1_000_000)
        listenBacklog = try Self.integer(env, "LISTEN_BACKLOG", default: listenBacklog, range: 1...65_535)
        requestReadTimeoutSeconds = try Self.integer(
            env, "REQUEST_READ_TIMEOUT_SECONDS", default: requestReadTimeoutSeconds, range: 1...600)
        // Leases are renewed every third of their length; pings must come well inside that so a quiet stream is never
        // the one thing keeping a proxy connection open past the lease.
        guard pingIntervalSeconds * 2 <= leaseSeconds else {
            throw ConfigurationError(
                "SSE_PING_SECONDS: \(pingIntervalSeconds) is not much shorter than TURN_LEASE_SECONDS (\(leaseSeconds)); use at most half of it"
            )
        }
    }

    private mutating func readTools(_ env: AppEnvironment) throws {
        if let path = env["TOOLS_CONFIG"], !path.isEmpty { toolsConfigPath = path }
        memorySearch = try Self.boolean(env, "MEMORY_SEARCH", default: memorySearch)
        maxToolRounds = try Self.integer(env, "MAX_TOOL_ROUNDS", default: maxToolRounds, range: 0...100)
        toolOutputMaxBytes = try Self.integer(
            env, "TOOL_OUTPUT_MAX_BYTES", default: toolOutputMaxBytes, range: 1_000...(16 << 20))
        if env["CLAUDE_THINKING_BUDGET"] != nil {
            let budget = try Self.integer(env, "CLAUDE_THINKING_BUDGET", default: 0, range: 1_024...128_000)
            guard budget < maxTokens else {
                throw ConfigurationError(
                    "CLAUDE_THINKING_BUDGET: \(budget) must be below CLAUDE_MAX_TOKENS (\(maxTokens)), which includes it")
            }
            thinkingBudget = budget
        }
    }

    private mutating func readAuth(_ env: AppEnvironment) throws {
        if let url = env["SUPABASE_URL"] {
            guard let parsed = URL(string: url), let scheme = parsed.scheme, ["http", "https"].contains(scheme),
                parsed.host != nil, parsed.query == nil
            else {
                throw ConfigurationError(
                    "SUPABASE_URL: '\(url)' is not the project URL (expected https://<project-ref>.supabase.co)")
            }
            var trimmed = url
            while trimmed.hasSuffix("/") { trimmed.removeLast() }
            if trimmed.hasSuffix("/auth/v1") { trimmed.removeLast("/auth/v1".count) }
            supabaseURL = trimmed
        }
        if let secret = env["SUPABASE_JWT_SECRET"] {
            guard secret.utf8.count >= 32 else {
                throw ConfigurationError(
                    "SUPABASE_JWT_SECRET: too short (\(secret.utf8.count) bytes); a Supabase JWT secret has at least 32 characters")
            }
            supabaseJWTSecret = secret
        }
        if let key = env["SUPABASE_ANON_KEY"] {
            guard supabaseURL != nil else {
                throw ConfigurationError("SUPABASE_ANON_KEY: set SUPABASE_URL too (the page signs in at that project)")
            }
            guard key.count >= 20, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
            else {
                throw ConfigurationError(
                    "SUPABASE_ANON_KEY: not a Supabase anon or publishable key (at least 20 characters of A-Z a-z 0-9 . _ -)"
                )
            }
            supabaseAnonKey = key
        }
        authAudience = env["AUTH_AUDIENCE"] ?? authAudience
        if let issuer = env["AUTH_ISSUER"] {
            guard let parsed = URL(string: issuer), parsed.scheme != nil, parsed.host != nil else {
                throw ConfigurationError("AUTH_ISSUER: '\(issuer)' is not a URL (e.g. https://<ref>.supabase.co/auth/v1)")
            }
            authIssuer = issuer
        }
        authJWKSTTL = .seconds(try Self.integer(env, "AUTH_JWKS_TTL_SECONDS", default: 300, range: 10...600))
        if let token = env["METRICS_TOKEN"] {
            guard token.utf8.count >= 16, token.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw ConfigurationError("METRICS_TOKEN: use at least 16 visible ASCII characters")
            }
            metricsToken = token
        }
        allowUnauthenticated = try Self.boolean(env, "ALLOW_UNAUTHENTICATED", default: allowUnauthenticated)
    }

    /// True when requests must carry a verified Supabase access token.
    var authEnabled: Bool { supabaseURL != nil || supabaseJWTSecret != nil }

    /// The `iss` tokens must carry; nil (unchecked) only with the legacy secret alone and no `AUTH_ISSUER`.
    var expectedIssuer: String? { authIssuer ?? supabaseURL.map { "\($0)/auth/v1" } }

    /// Where the project's public signing keys are published.
    var jwksURL: String? { supabaseURL.map { "\($0)/auth/v1/.well-known/jwks.json" } }

    /// True for addresses only this machine can reach.
    var listensOnLoopback: Bool {
        let host = host.lowercased()
        return host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    /// A configuration with every default, for tests and tools.
    init() {}

    /// True when replies come from the built-in stub rather than the Claude API.
    var usesOfflineStub: Bool { anthropicAPIKey == nil }

    private static func integer(_ env: AppEnvironment, _ key: String, default value: Int, range: ClosedRange<Int>)
        throws -> Int
    {
        guard let text = env[key] else { return value }
        guard let parsed = Int(text), range.contains(parsed) else {
            throw ConfigurationError("\(key): '\(text)' is not an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return parsed
    }

    private static func boolean(_ env: AppEnvironment, _ key: String, default value: Bool) throws -> Bool {
        guard let text = env[key]?.lowercased() else { return value }
        switch text {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigurationError("\(key): '\(text)' is not a boolean (true/false)")
        }
    }
}
