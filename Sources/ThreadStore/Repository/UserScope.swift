import CPostgres
import Foundation

/// Row-level security for one end user's statements.
///
/// The migrations give the no-login role `agent_service_user` policies that admit only the rows of the user named
/// in the transaction-local setting `request.jwt.claims` (the setting PostgREST and `auth.uid()` read on Supabase).
/// `asUser` sends a batch in one pipeline (one implicit transaction up to its sync) led by a `set_config` of both
/// settings (and a `statement_timeout`) with `is_local`, so they hold for the batch's statements and end with its
/// transaction: one round trip, nothing left on the session, so a transaction pooler can hand the backend to anyone
/// next.
enum UserScope {
    static let role = "agent_service_user"

    /// Switches to the role with the user's claims, and when `statementTimeout` is set gives the server a
    /// `statement_timeout` of nine tenths of it (transaction-local too, so a transaction pooler carries it; a startup
    /// `options` parameter would be rejected by PgBouncer): a slow statement is cancelled by the server, which keeps
    /// the connection usable, before the client-side deadline gives up on the connection.
    static func enter(_ user: UUID, statementTimeout: Duration?) -> SQLQuery {
        let claims = #"{"sub":"\#(user.uuidString.lowercased())","role":"authenticated"}"#
        guard let milliseconds = serverTimeoutMilliseconds(statementTimeout) else {
            return "SELECT set_config('role', \(role), true), set_config('request.jwt.claims', \(claims), true)"
        }
        return """
            SELECT set_config('role', \(role), true), set_config('request.jwt.claims', \(claims), true),
                   set_config('statement_timeout', \("\(milliseconds)ms"), true)
            """
    }

    /// Nine tenths of the client deadline in whole milliseconds (at least 1), or nil when there is no deadline.
    static func serverTimeoutMilliseconds(_ statementTimeout: Duration?) -> Int? {
        guard let statementTimeout, statementTimeout > .zero else { return nil }
        return max(1, statementTimeout.milliseconds * 9 / 10)
    }
}

extension DatabaseConnection {
    /// Runs `queries` as `user` under row-level security in one round trip and returns their results in order.
    ///
    /// A failing statement rolls the whole batch back and is thrown.
    func asUser(rowSecurity: Bool = true, _ user: UUID, _ queries: [SQLQuery]) throws -> [QueryResult] {
        guard rowSecurity else { return queries.count == 1 ? [try query(queries[0])] : try pipeline(queries) }
        let results = try pipeline([UserScope.enter(user, statementTimeout: statementTimeout)] + queries)
        return Array(results.dropFirst())
    }

    /// Runs one statement for each user in one round trip and one transaction, each under its own user's row-level
    /// security (a later transaction-local `set_config` replaces the earlier one), and returns their results in order.
    /// A failing statement rolls them all back and is thrown.
    func asUsers(rowSecurity: Bool = true, _ calls: [(user: UUID, query: SQLQuery)]) throws -> [QueryResult] {
        if calls.count == 1 { return [try asUser(rowSecurity: rowSecurity, calls[0].user, calls[0].query)] }
        guard rowSecurity else { return try pipeline(calls.map(\.query)) }
        let queries = calls.flatMap { [UserScope.enter($0.user, statementTimeout: statementTimeout), $0.query] }
        let results = try pipeline(queries)
        return stride(from: 1, to: results.count, by: 2).map { results[$0] }
    }

    /// Runs one statement as `user` under row-level security (see `asUser(_:_:)`).
    func asUser(rowSecurity: Bool = true, _ user: UUID, _ query: SQLQuery) throws -> QueryResult {
        try asUser(rowSecurity: rowSecurity, user, [query])[0]
    }
}
