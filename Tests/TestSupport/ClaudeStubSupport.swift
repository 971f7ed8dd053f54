public import ClaudeStub

/// Runs `body` with a started ``ClaudeStub`` on a free loopback port and stops it afterwards.
///
/// ```swift
/// try await withClaudeStub { stub in
///     stub.enqueue(.httpError(status: 529))
///     // point the service's Claude client at stub.baseURL ...
/// }
/// ```
public func withClaudeStub<T>(
    configuration: StubConfiguration = .init(),
    _ body: (ClaudeStub) async throws -> T
) async throws -> T {
    let stub = ClaudeStub(configuration: configuration)
    try await stub.start()
    do {
        let result = try await body(stub)
        await stub.stop()
        return result
    } catch {
        await stub.stop()
        throw error
    }
}
