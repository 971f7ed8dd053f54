/// An error from the thread store: a database failure, a rejected input or a repository outcome such as a busy thread.
///
/// `description` is deliberately free of user text and query parameters so the error can be logged as is; the server's
/// own message and other details are available through `String(reflecting:)`.
public struct StoreError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What kind of failure this is. New codes may be added, so switch with a `default`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Base: String, Sendable {
            case threadBusy, notFound, leaseLost, invalidText, invalidArgument, connectionFailed, connectionLost
            case server, migration, transactionPooler, embeddedPostgres, closed, timeout, overloaded
        }
        let base: Base
        init(_ base: Base) { self.base = base }

        /// Another turn of the thread is still streaming under an unexpired lease.
        public static let threadBusy = Code(.threadBusy)
        /// The row does not exist for this user.
        public static let notFound = Code(.notFound)
        /// The turn is no longer streaming, so its lease cannot be renewed.
        public static let leaseLost = Code(.leaseLost)
        /// A text value cannot be stored (it contains a NUL byte); nothing was written.
        public static let invalidText = Code(.invalidText)
        /// An argument is out of range (an empty thread id, a negative limit, ...); nothing was written.
        public static let invalidArgument = Code(.invalidArgument)
        /// No connection to the server could be opened.
        public static let connectionFailed = Code(.connectionFailed)
        /// The connection broke while a statement was in flight; whether it ran is unknown.
        public static let connectionLost = Code(.connectionLost)
        /// The server reported an error; see `sqlState`.
        public static let server = Code(.server)
        /// Applying or checking migrations failed.
        public static let migration = Code(.migration)
        /// The connection goes through a transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supabase's
        /// port 6543), where session state such as the migration lock does not hold; nothing was changed.
        public static let transactionPooler = Code(.transactionPooler)
        /// The embedded local PostgreSQL cluster could not be set up or started.
        public static let embeddedPostgres = Code(.embeddedPostgres)
        /// The database pool was closed.
        public static let closed = Code(.closed)
        /// The database did not answer a round trip in time (`DatabaseConfiguration.statementTimeout`), or no pooled
        /// connection came free in time (`acquireTimeout`); whether an in-flight statement ran is unknown.
        public static let timeout = Code(.timeout)
        /// Every pooled connection is busy and the queue of waiting callers is full (`maxWaiters`).
        public static let overloaded = Code(.overloaded)

        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public var code: Code
    /// The five-character SQLSTATE when the server reported one.
    public var sqlState: String?
    /// A message safe to log: it never contains user text or query parameters.
    public var message: String
    /// Details that may contain user data (the server's message, libpq's text); shown only by `String(reflecting:)`.
    var detail: String?
    /// Overrides the code's default transience (a refused password is a `connectionFailed` that retrying won't fix).
    var transient: Bool?

    init(_ code: Code, _ message: String, sqlState: String? = nil, detail: String? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
    }

    /// Whether retrying the same operation later may succeed: connection failures and losses, timeouts, a full pool,
    /// server shutdown (57P01, 57P02, 57P03), a statement cancelled by the server's `statement_timeout` (57014), any
    /// 08xxx connection exception, serialization failure (40001) and deadlock (40P01).
    public var isTransient: Bool {
        if let transient { return transient }
        switch code.base {
        case .connectionFailed, .connectionLost, .timeout, .overloaded: return true
        case .server:
            guard let state = sqlState else { return false }
            return state.hasPrefix("08") || ["57P01", "57P02", "57P03", "57014", "40001", "40P01"].contains(state)
        default: return false
        }
    }

    public var description: String {
        if let sqlState { return "\(code): \(message) (SQLSTATE \(sqlState))" }
        return "\(code): \(message)"
    }

    public var debugDescription: String {
        guard let detail, !detail.isEmpty else { return "StoreError(\(description))" }
        return "StoreError(\(description); detail: \(detail))"
    }
}

extension StoreError {
    /// Rejects text Postgres cannot store, naming the field; call before any I/O.
    static func checkText(_ value: String?, field: String) throws {
        guard let value, value.utf8.contains(0) else { return }
        throw StoreError(.invalidText, "\(field) contains a NUL byte (U+0000), which Postgres text cannot store")
    }
}
