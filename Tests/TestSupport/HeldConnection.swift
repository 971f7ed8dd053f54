import Synchronization
public import ThreadStore

extension Database {
    /// Holds one pooled connection (in `pg_sleep(seconds)`) and runs `body` once it is held, so calls made in `body`
    /// queue behind it; returns when both are done.
    public func whileHoldingAConnection(
        seconds: Double, _ body: @Sendable @escaping () async throws -> Void
    ) async throws {
        final class Flag: Sendable { let raised = Atomic<Bool>(false) }
        let holding = Flag()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                _ = try await self.withConnection { connection in
                    holding.raised.store(true, ordering: .relaxed)
                    return try connection.query("SELECT pg_sleep(\(seconds))")
                }
            }
            while !holding.raised.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            group.addTask(operation: body)
            try await group.waitForAll()
        }
    }
}
