import Dispatch
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// What one benchmark stream saw.
struct StreamResult: Sendable {
    var status = 0
    /// Monotonic nanoseconds (`DispatchTime.uptimeNanoseconds`, the clock the stub stamps deltas with).
    var requestSent: UInt64 = 0
    var firstChunkAt: UInt64?
    /// When the response head arrived.
    var headersAt: UInt64?
    /// The stub's stamp on the first delta and its arrival time of the request.
    var firstDeltaStamp: UInt64?
    var stubReceivedStamp: UInt64?
    /// Per delta: client arrival minus the stub's send stamp, in nanoseconds.
    var deltaDelays: [Int64] = []
    var text = ""
    var turnID: String?
    var threadID: String?
    var userID: String?
    var done = false
    var error: String?
    var finishedAt: UInt64 = 0
}

/// What the load client speaks: the service's `POST /query_stream`, or Claude's own `POST /v1/messages` (the relay
/// baseline: nginx between the client and the stub, moving the same stream byte for byte).
enum StreamWire: Sendable {
    case service
    case claude

    var path: String { self == .service ? "/query_stream" : "/v1/messages" }
}

/// Drives many concurrent `POST /query_stream` requests on one event loop and parses SSE incrementally.
///
/// Built on SwiftNIO so that the load generator itself stays cheap at 10,000 concurrent streams: one thread, no
/// per-stream tasks, one small handler per connection.
enum LoadClient {
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Opens one stream; the future completes when the response ends (or fails).
    static func stream(
        group: any EventLoopGroup, host: String, port: Int, body: ByteBuffer, wire: StreamWire = .service
    ) -> EventLoopFuture<StreamResult> {
        let loop = group.next()
        let promise = loop.makePromise(of: StreamResult.self)
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(30))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        SSEStreamHandler(host: host, body: body, wire: wire, promise: promise))
                }
            }
        bootstrap.connect(host: host, port: port).whenFailure { error in
            var result = StreamResult()
            result.error = "connect: \(error)"
            result.finishedAt = now()
            promise.succeed(result)
        }
        return promise.futureResult
    }
}

/// Writes the request, then parses the SSE body as it arrives.
final class SSEStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let host: String
    private let body: ByteBuffer
    private let wire: StreamWire
    private let promise: EventLoopPromise<StreamResult>
    private var result = StreamResult()
    private var pending: [UInt8] = []
    private var finished = false

    init(host: String, body: ByteBuffer, wire: StreamWire, promise: EventLoopPromise<StreamResult>) {
        self.host = host
        self.body = body
        self.wire = wire
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: wire.path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Accept", value: "text/event-stream")
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        if wire == .claude {
            head.headers.add(name: "x-api-key", value: "bench")
            head.headers.add(name: "anthropic-version", value: "2023-06-01")
        }
        result.requestSent = LoadClient.now()
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            result.status = Int(head.status.code)
            result.headersAt = LoadClient.now()
            if head.status != .ok { result.error = "http \(head.status.code)" }
        case .body(let buffer):
            let arrival = LoadClient.now()
            pending.append(contentsOf: buffer.readableBytesView)
            parse(arrival: arrival)
        case .end:
            finish(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished && result.error == nil && !result.done { result.error = "connection closed early" }
        finish(context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if result.error == nil && !result.done { result.error = "io: \(error)" }
        context.close(promise: nil)
    }

    private func finish(context: ChannelHandlerContext) {
        guard !finished else { return }
        finished = true
        if result.status == 200 && !result.done && result.error == nil { result.error = "no done event" }
        result.finishedAt = LoadClient.now()
        promise.succeed(result)
        context.close(promise: nil)
    }

    /// Splits complete `\n\n`-terminated events off `pending` and handles each.
    private func parse(arrival: UInt64) {
        var start = 0
        var index = 0
        while index + 1 < pending.count {
            if pending[index] == 0x0A && pending[index + 1] == 0x0A {
                handle(event: pending[start..<index], arrival: arrival)
                start = index + 2
                index = start
            } else {
                index += 1
            }
        }
        if start > 0 { pending.removeFirst(start) }
    }

    private func handle(event: ArraySlice<UInt8>, arrival: UInt64) {
        // A chunk frame is `id: <turn>:<offset>` then `data: {...}`; `: ping` comments have no data line.
        let data = Array("data: ".utf8)
        var line = event[...]
        while !line.starts(with: data) {
            guard let newline = line.firstIndex(of: 0x0A) else { return }
            line = line[(newline + 1)...]
        }
        let json = Data(line.dropFirst(6))
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            result.error = "unparseable event"
            return
        }
        if wire == .claude {
            handleClaude(object, arrival: arrival)
            return
        }
        if let chunk = object["chunk"] as? String {
            chunkArrived(chunk, arrival: arrival)
        } else if object["done"] as? Bool == true {
            result.done = true
            result.turnID = object["turn_id"] as? String
            result.threadID = object["thread_id"] as? String
        } else if let error = object["error"] as? [String: Any] {
            result.error = "event: \(error["type"] as? String ?? "unknown")"
        }
    }

    /// A text chunk: the stub stamps deltas "[rx:<ns>]" (first delta only) and "[ts:<ns>]".
    private func chunkArrived(_ chunk: String, arrival: UInt64) {
        if result.firstChunkAt == nil { result.firstChunkAt = arrival }
        var text = Substring(chunk)
        while text.hasPrefix("[rx:") || text.hasPrefix("[ts:"), let close = text.firstIndex(of: "]") {
            let value = UInt64(text[text.index(text.startIndex, offsetBy: 4)..<close]) ?? 0
            if text.hasPrefix("[rx:") {
                result.stubReceivedStamp = value
            } else {
                if result.firstDeltaStamp == nil { result.firstDeltaStamp = value }
                result.deltaDelays.append(Int64(arrival) - Int64(value))
            }
            text = text[text.index(after: close)...]
        }
        result.text += chunk
    }

    /// Claude's own events, as the stub sends them (the relay baseline): text deltas, then `message_stop`.
    private func handleClaude(_ object: [String: Any], arrival: UInt64) {
        switch object["type"] as? String {
        case "content_block_delta":
            if let delta = object["delta"] as? [String: Any], let text = delta["text"] as? String {
                chunkArrived(text, arrival: arrival)
            }
        case "message_stop":
            result.done = true
        case "error":
            result.error = "event: error"
        default:
            break
        }
    }
}
