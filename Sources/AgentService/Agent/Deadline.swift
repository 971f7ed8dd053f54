import Synchronization

/// Runs `work` in a task of its own and returns its result, or nil when `limit` passes first (or, with
/// `stopWaitingOnCancel`, when the caller is cancelled).
///
/// The work is not awaited past the limit (its result is dropped): a call stuck on a stalled database must not hold
/// its caller hostage, and a libpq call on a pool thread cannot be interrupted anyway. By default the work goes on
/// (a cancelled turn can still record what it has); with `cancelWorkOnTimeout` it is cancelled at the limit, which
/// takes a call still waiting for a pool connection out of the queue (health checks must not pile up there).
func withDeadline<T: Sendable>(
    _ limit: Duration, stopWaitingOnCancel: Bool = true, cancelWorkOnTimeout: Bool = false,
    _ work: @escaping @Sendable () async throws -> T
) async -> Result<T, any Error>? {
    let pending = Mutex<(continuation: CheckedContinuation<Result<T, any Error>?, Never>?, result: Result<T, any Error>??)>(
        (nil, nil))
    let finish: @Sendable (Result<T, any Error>?) -> Void = { result in
        let waiting = pending.withLock { state -> CheckedContinuation<Result<T, any Error>?, Never>? in
            if state.result != nil { return nil }
            state.result = .some(result)
            defer { state.continuation = nil }
            return state.continuation
        }
        waiting?.resume(returning: result)
    }
    let worker = Task.detached {
        do { finish(.success(try await work())) } catch { finish(.failure(error)) }
    }
    let timer = Task.detached {
        do { try await Task.sleep(for: limit) } catch { return }
        finish(nil)
        if cancelWorkOnTimeout { worker.cancel() }
    }
    defer { timer.cancel() }
    return await withTaskCancellationHandler {
        await withCheckedContinuation { continuation in
            let ready = pending.withLock { state -> Result<T, any Error>?? in
                if let result = state.result { return .some(result) }
                state.continuation = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    } onCancel: {
        if stopWaitingOnCancel { finish(nil) }
    }
}

/// Sleeps for `duration` even in a cancelled task (where `Task.sleep` returns at once, turning a retry loop hot).
func sleepIgnoringCancellation(_ duration: Duration) async {
    await Task.detached { try? await Task.sleep(for: duration) }.value
}
