import CPostgres
import Foundation

/// Row-level security for one end user's statements.
///
/// The migrations give the no-login role `agent_service_user` policies that admit only the rows of the user named
/// in the transaction-local setting `request.jwt.claims` (the setting PostgREST and `auth.uid()` read on Supabase).
/// `asUser` sends a batch in one pipeline (one implicit transaction up to its sync) led by a `set_config` of both
/// settings with `is_local`, so they hold for the batch's statements and end with its transaction: one round trip,
/// nothing left on the session, so a transaction pooler can hand the backend to anyone next.
enum UserScope {
    static let role = "agent_service_user"

    static func enter(_ user: UUID) -> SQLQuery {
        let claims = #"{"sub":"\#(user.uuidString.lowercased())","role":"authenticated"}"#
        return "SELECT set_config('role', \(role), true), set_config('request.jwt.claims', \(claims), true)"
    }
}

extension DatabaseConnection {
    /// Runs `queries` as `user` under row-level security in one round trip and returns their results in order.
    ///
    /// A failing statement rolls the whole batch back and is thrown.
    func asUser(rowSecurity: Bool = true, _ user: UUID, _ queries: [SQLQuery]) throws -> [QueryResult] {
        guard rowSecurity else { return queries.count == 1 ? [try query(queries[0])] : try pipeline(queries) }
        let results = try pipeline([UserScope.enter(user)] + queries)
        return Array(results.dropFirst())
    }

    /// Runs one statement as `user` under row-level security (see `asUser(_:_:)`).
    func asUser(rowSecurity: Bool = true, _ user: UUID, _ query: SQLQuery) throws -> QueryResult {
        try asUser(rowSecurity: rowSecurity, user, [query])[0]
    }
}
