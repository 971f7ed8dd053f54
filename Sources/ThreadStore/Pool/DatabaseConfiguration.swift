/// How to reach Postgres, how many connections to keep, and how long anything may wait.
public struct DatabaseConfiguration: Sendable {
    /// A libpq connection string: a URI (`postgresql://user:pass@host:5432/db`) or `key=value` pairs.
    public var conninfo: String
    /// The number of connections (each with its own thread). Callers beyond this wait in FIFO order.
    public var poolSize: Int
    /// libpq's `connect_timeout`, in seconds, for each connection attempt.
    public var connectTimeoutSeconds: Int
    /// Reported to the server as `application_name`.
    public var applicationName: String
    /// The client-side deadline of each round trip (a statement, or a pipelined batch). When it passes, the
    /// connection is closed and the call throws a transient `StoreError.timeout`; the slot reconnects on next use.
    /// Statements run for a user (`ThreadRepository`) also get a server-side `statement_timeout` of nine tenths of
    /// it, so a merely slow statement is cancelled by the server first and the connection survives. Zero or less
    /// turns both off. Migration scripts have no deadline.
    public var statementTimeout: Duration
    /// How long `Database.withConnection` waits for a free connection before throwing a transient
    /// `StoreError.timeout`. Zero or less waits without limit.
    public var acquireTimeout: Duration
    /// How many callers may wait for a connection at once; beyond that `withConnection` throws a transient
    /// `StoreError.overloaded` at once.
    public var maxWaiters: Int

    /// A configuration for `conninfo`; every limit has a safe default.
    public init(
        conninfo: String, poolSize: Int = 4, connectTimeoutSeconds: Int = 5, applicationName: String = "agent-service",
        statementTimeout: Duration = .seconds(10), acquireTimeout: Duration = .seconds(5), maxWaiters: Int = 1_000
    ) {
        self.conninfo = conninfo
        self.poolSize = max(1, poolSize)
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.applicationName = applicationName
        self.statementTimeout = statementTimeout
        self.acquireTimeout = acquireTimeout
        self.maxWaiters = max(0, maxWaiters)
    }
}

/// Counters of a `Database` since it was created.
public struct DatabaseStatistics: Sendable, Hashable {
    /// Round trips to the server: each statement, script and pipeline sync counts one.
    public var roundTrips: Int
    /// Connections opened, including reconnects after a broken connection.
    public var connectionsOpened: Int
    /// Connections found broken and discarded.
    public var connectionsDiscarded: Int
}
