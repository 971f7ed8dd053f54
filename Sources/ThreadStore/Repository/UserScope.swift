import CPostgres
import Foundation

/// Row-level security for one end user's statements.
///
/// The migrations give the no-login role `agent_service_user` policies that admit only the rows of the user named
/// in the transaction-local setting `request.jwt.claims` (the setting PostgREST and `auth.uid()` read on Supabase).
/// `asUser` wraps a batch in `BEGIN`, switches to that role with both settings transaction-local, and `COMMIT`s, all
/// in one pipelined round trip: nothing outlives the transaction, so a transaction pooler can hand the backend to
/// anyone next.
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
    func asUser(_ user: UUID, _ queries: [SQLQuery]) throws -> [QueryResult] {
        let results = try pipeline(["BEGIN", UserScope.enter(user)] + queries + ["COMMIT"])
        return Array(results[2..<(2 + queries.count)])
    }

    /// Runs one statement as `user` under row-level security (see `asUser(_:_:)`).
    func asUser(_ user: UUID, _ query: SQLQuery) throws -> QueryResult {
        try asUser(user, [query])[0]
    }
}
