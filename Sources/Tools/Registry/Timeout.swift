/// Raised by `withTimeout` when the operation did not finish in time.
struct TimeoutError: Error {}

/// Runs `operation`, cancelling it when `timeout` passes first (then throws `TimeoutError`).
func withTimeout<T: Sendable>(
    _ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TimeoutError()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
