import ArgumentParser
import Claude
import EventLoopExecution
import Foundation
import Hummingbird
import Logging
import NIOCore
import ThreadStore

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
///
/// With `--database-url` it also does the one part of the service's work that no implementation can leave out: each
/// turn is begun in Postgres (a new thread, as the benchmark's load) before the upstream request, and finished with the
/// reply's text after the stream. That floor includes the two durable round trips and the database's own work.
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

    @Option(
        help:
            "A migrated agent-service database: each turn is then begun there (a new thread) before the upstream request and finished with the reply's text after the stream, the service's two durable round trips.")
    var databaseURL: String?

    func run() async throws {
        var logger = Logger(label: "agent-bench-relay-floor")
        logger.logLevel = .warning
        let client = HTTPClient()
        let upstream = "http://127.0.0.1:\(upstreamPort)/v1/messages"
        let database = databaseURL.map {
            Database(configuration: DatabaseConfiguration(conninfo: $0, poolSize: 8), logger: logger)
        }
        let repository = database.map { ThreadRepository(database: $0) }
        let router = Router(context: EventLoopRequestContext.self)
        router.post("/v1/messages") { request, context -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let turn: (user: UUID, id: UUID)? = if let repository { try await Self.begin(on: repository) } else { nil }
            let response = try await client.execute(
                Claude.HTTPRequest(
                    method: "POST", url: upstream,
                    headers: [("content-type", "application/json"), ("anthropic-version", "2023-06-01")],
                    body: Array(buffer: body)))
            let executor = EventLoopTaskExecutor(context.eventLoop)
            return Response(
                status: .init(code: response.status), headers: [.contentType: "text/event-stream"],
                body: ResponseBody { writer in
                    let reply = try await withTaskExecutorPreference(executor) {
                        var reply = turn.map { _ in ReplyText() }
                        for try await chunk in response {
                            reply?.feed(chunk)
                            try await writer.write(ByteBuffer(bytes: chunk))
                        }
                        return reply?.text
                    }
                    if let repository, let turn, let reply {
                        _ = try await repository.completeTurn(
                            TurnCompletion(
                                turnID: turn.id, userID: turn.user, reply: reply, model: "claude-bench",
                                stopReason: "end_turn", usage: TokenUsage()))
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
        await database?.close()
    }

    /// Begins a turn of a new thread, as the service's admission does for the benchmark's load.
    private static func begin(on repository: ThreadRepository) async throws -> (user: UUID, id: UUID) {
        let user = UUID()
        let result = try await repository.beginTurn(
            BeginTurnRequest(
                userID: user, threadID: "floor-\(UUID().uuidString.prefix(13).lowercased())",
                question: "benchmark question 1 of conversation 0000"))
        guard case .started(let turn) = result else { throw HTTPError(.conflict) }
        return (user, turn.turnID)
    }
}

/// The text of a streamed reply, kept the cheapest way the service knows (`TextDeltaShape`), for the write at its end.
struct ReplyText {
    private var decoder = SSEDecoder()
    private(set) var text = ""

    mutating func feed(_ chunk: [UInt8]) {
        for event in decoder.feed(chunk) {
            if let delta = TextDeltaShape.match(event.data) { text += delta.text }
        }
    }
}
