import ArgumentParser
import Claude
import Foundation
import Hummingbird
import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// `agent-bench relay-floor`: the least a relay built from the service's own parts can cost, for
/// `service --relay-baseline`.
///
/// It is what nginx is in that baseline, built from what the design card fixes for agent-service: Hummingbird (the
/// same version and configuration) accepts `POST /v1/messages`, libcurl (the service's own `HTTPClient`) sends it on
/// to the stub, and every chunk of the stub's body is written to the response as it arrives, byte for byte. There is
/// nothing else: no identity, no database, no decoding, no framing. The writing loop runs on the connection's event
/// loop, as the service's does, so a chunk crosses threads once (curl thread to event loop). The benchmark starts it
/// with mimalloc, the service's allocator. What agent-service costs above this is what its own work costs; what this
/// costs above nginx is the price of the stack.
struct RelayFloorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-floor",
        abstract:
            "Relay POST /v1/messages to an upstream with Hummingbird and libcurl, byte for byte, until SIGTERM; prints 'relay listening on PORT'."
    )

    @Option(help: "The upstream's port on 127.0.0.1 (the stub).")
    var upstreamPort: Int

    @Option(help: "Port (0: any free port).")
    var port = 0

    func run() async throws {
        var logger = Logger(label: "agent-bench-relay-floor")
        logger.logLevel = .warning
        let client = HTTPClient()
        let upstream = "http://127.0.0.1:\(upstreamPort)/v1/messages"
        let router = Router(context: FloorContext.self)
        router.post("/v1/messages") { request, context -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let response = try await client.execute(
                Claude.HTTPRequest(
                    method: "POST", url: upstream,
                    headers: [("content-type", "application/json"), ("anthropic-version", "2023-06-01")],
                    body: Array(buffer: body)))
            let executor = LoopExecutor(context.eventLoop)
            return Response(
                status: .init(code: response.status), headers: [.contentType: "text/event-stream"],
                body: ResponseBody { writer in
                    try await withTaskExecutorPreference(executor) {
                        for try await chunk in response { try await writer.write(ByteBuffer(bytes: chunk)) }
                    }
                    try await writer.finish(nil)
                })
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: nil, backlog: 4_096),
            onServerRunning: { channel in
                FileHandle.standardOutput.write(Data("relay listening on \(channel.localAddress?.port ?? 0)\n".utf8))
            },
            logger: logger)
        try await app.runService()
        client.shutdown()
    }
}

/// Hummingbird's basic context plus the connection's event loop (as the service's `AgentRequestContext`).
struct FloorContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let eventLoop: any EventLoop

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        eventLoop = source.channel.eventLoop
    }
}

/// Runs a task's jobs on one event loop (as the service's `EventLoopTaskExecutor`).
final class LoopExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
