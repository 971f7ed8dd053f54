/// How to reach Postgres and how many connections to keep.
public struct DatabaseConfiguration: Sendable {
    /// A libpq connection string: a URI (`postgresql://user:pass@host:5432/db`) or `key=value` pairs.
    public var conninfo: String
    /// The number of connections (each with its own thread). Callers beyond this wait in FIFO order.
    public var poolSize: Int
    /// libpq's `connect_timeout`, in seconds, for each connection attempt.
    public var connectTimeoutSeconds: Int
    /// Reported to the server as `application_name`.
    public var applicationName: String

    public init(
        conninfo: String, poolSize: Int = 4, connectTimeoutSeconds: Int = 5, applicationName: String = "agent-service"
    ) {
        self.conninfo = conninfo
        self.poolSize = max(1, poolSize)
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.applicationName = applicationName
    }
}

/// Counters of a `Database` since it was created.
public struct DatabaseStatistics: Sendable, Hashable {
    /// Round trips to the server: each `PQexecParams`/`PQexec` and each pipeline sync counts one.
    public var roundTrips: Int
    /// Connections opened, including reconnects after a broken connection.
    public var connectionsOpened: Int
    /// Connections found broken and discarded.
    public var connectionsDiscarded: Int
}
