import Foundation

/// Runs blocking work (pg_ctl, initdb, key generation, a child's exit) on a thread of its own, off Swift's cooperative
/// pool. On two cores the pool has two threads: one test blocking both stalls every other test in the process (their
/// timers, stubs and services), which is how unrelated suites used to time out on a loaded machine.
public func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// Runs blocking clean-up (stopping a throwaway cluster, removing its folder) on a thread of its own, without
/// waiting: for `defer` blocks, which cannot await.
public func cleanUpOffPool(_ work: @escaping @Sendable () -> Void) {
    Thread { work() }.start()
}
