import Foundation
import Synchronization

/// Group admission: one-statement calls made as different users at the same moment go to Postgres as one pipeline,
/// so a burst of new turns costs one round trip, one transaction and one WAL flush per group instead of per turn.
///
/// Every caller waits for a pooled connection as before (the pool's `acquireTimeout` and `maxWaiters` bound it
/// exactly as they did). The first caller to get one takes its own call and the oldest calls still waiting, up to
/// `maxBatch`, and sends them in one pipeline: `set_config` of the first user's role and claims, the first user's
/// statement, the second user's `set_config`, the second user's statement, and so on. A later `set_config` with
/// `is_local` replaces the earlier one inside the same transaction, so each statement runs under its own user's
/// row-level security, and nothing is left on the session (safe behind a transaction pooler). The callers whose
/// calls were taken leave the pool's queue at once.
///
/// A statement that fails rolls its whole pipeline back; the group is then run again one call at a time on the same
/// connection, so each caller gets its own outcome (a busy thread, a duplicate key) as if it had been alone. A fault
/// (a timeout, a broken connection) fails every call of the group with the same transient error.
final class StatementBatcher: Sendable {
    /// One caller's statement and, once run, its outcome.
    final class Call: Sendable {
        let user: UUID
        let query: SQLQuery
        private let state = Mutex<
            (outcome: Result<QueryResult, any Error>?, waiter: CheckedContinuation<QueryResult, any Error>?)
        >((nil, nil))

        init(user: UUID, query: SQLQuery) {
            self.user = user
            self.query = query
        }

        /// The first outcome wins; later ones are ignored.
        func deliver(_ outcome: Result<QueryResult, any Error>) {
            let waiter = state.withLock { state -> CheckedContinuation<QueryResult, any Error>? in
                guard state.outcome == nil else { return nil }
                state.outcome = outcome
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(with: outcome)
        }

        /// The outcome, or `CancellationError` at once when the caller is cancelled: a caller whose group is stuck in a
        /// stalled database is let go as promptly as one waiting alone (the pool abandons a cancelled connection).
        func outcome() async throws -> QueryResult {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let ready = state.withLock { state -> Result<QueryResult, any Error>? in
                        if let outcome = state.outcome { return outcome }
                        state.waiter = continuation
                        return nil
                    }
                    if let ready { continuation.resume(with: ready) }
                }
            } onCancel: {
                deliver(.failure(CancellationError()))
            }
        }
    }

    let database: Database
    let rowSecurity: Bool
    let maxBatch: Int
    /// Calls not yet taken by any group, oldest first.
    private let waiting = Mutex<[Call]>([])

    init(database: Database, rowSecurity: Bool, maxBatch: Int = 64) {
        self.database = database
        self.rowSecurity = rowSecurity
        self.maxBatch = max(1, maxBatch)
    }

    /// Runs `query` as `user` (alone or in a group) and returns its result.
    func run(_ user: UUID, _ query: SQLQuery) async throws -> QueryResult {
        let call = Call(user: user, query: query)
        waiting.withLock { $0.append(call) }
        return try await withThrowingTaskGroup(of: QueryResult?.self) { group in
            // Waits for a connection and, unless another group took this call meanwhile, leads a group with it.
            group.addTask {
                do {
                    try await self.database.withConnection { self.lead(with: call, on: $0) }
                } catch {
                    // No connection in time (or cancelled): the call fails unless a group took it.
                    if self.withdraw(call) { call.deliver(.failure(error)) }
                }
                return nil
            }
            group.addTask { try await call.outcome() }
            for try await result in group {
                if let result {
                    group.cancelAll()  // stop waiting for a connection another group made unnecessary
                    return result
                }
            }
            throw CancellationError()  // not reached: the outcome task returns or throws
        }
    }

    /// Removes a call nobody has taken; false when a group has it (its outcome is on the way).
    private func withdraw(_ call: Call) -> Bool {
        waiting.withLock { calls in
            guard let index = calls.firstIndex(where: { $0 === call }) else { return false }
            calls.remove(at: index)
            return true
        }
    }

    /// On the connection's thread: takes `call` (if still waiting) and the oldest others, and runs them.
    private func lead(with call: Call, on connection: DatabaseConnection) {
        let group = waiting.withLock { calls -> [Call] in
            guard let index = calls.firstIndex(where: { $0 === call }) else { return [] }
            calls.remove(at: index)
            let others = min(calls.count, maxBatch - 1)
            defer { calls.removeFirst(others) }
            return [call] + calls.prefix(others)
        }
        guard !group.isEmpty else { return }
        do {
            let results = try connection.asUsers(rowSecurity: rowSecurity, group.map { ($0.user, $0.query) })
            for (member, result) in zip(group, results) { member.deliver(.success(result)) }
        } catch let error as StoreError where group.count > 1 && error.code == .server {
            // One statement failed and rolled the group back: each alone, so each gets its own outcome.
            for member in group {
                member.deliver(Result { try connection.asUser(rowSecurity: rowSecurity, member.user, member.query) })
            }
        } catch {
            for member in group { member.deliver(.failure(error)) }
        }
    }
}
