import ArgumentParser
import ClaudeStub
import Dispatch
import Foundation
import Logging

/// `agent-bench stub`: the Claude stub as a process of its own, stamping every delta for latency measurements.
struct StubCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stub",
        abstract: "Run the Claude stub (timestamped deltas) until SIGTERM; prints 'stub listening on PORT'.")

    @Option(help: "Port (0: any free port).")
    var port = 0

    @Option(help: "Text deltas per reply.")
    var deltas = 20

    @Option(help: "Milliseconds between deltas.")
    var intervalMs = 100

    @Option(help: "Milliseconds before the first delta.")
    var firstMs = 50

    func run() async throws {
        var logger = Logger(label: "agent-bench-stub")
        logger.logLevel = .warning
        let stub = ClaudeStub(
            configuration: StubConfiguration(
                firstDeltaDelay: .milliseconds(firstMs), deltaInterval: .milliseconds(intervalMs), deltaCount: deltas,
                embedTimestamps: true),
            logger: logger)
        try await stub.start(host: "127.0.0.1", port: port)
        FileHandle.standardOutput.write(Data("stub listening on \(stub.port)\n".utf8))
        signal(SIGTERM, SIG_IGN)
        let (stopped, continuation) = AsyncStream<Void>.makeStream()
        let source = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        source.setEventHandler { continuation.finish() }
        source.resume()
        for await _ in stopped {}
        source.cancel()
        await stub.stop()
    }
}
