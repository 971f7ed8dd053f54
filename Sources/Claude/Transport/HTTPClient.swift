import Foundation
import Synchronization

/// A general streaming HTTP client on libcurl multi handles, each driven by one dedicated thread.
///
/// Transfers are multiplexed over HTTP/2 where the server supports it and connections are reused. A response
/// is returned as soon as its status and headers arrived; its body is an `AsyncSequence` of byte chunks with
/// backpressure (libcurl is paused while too many bytes are undelivered) and cancellation (dropping the
/// response, calling ``HTTPStreamingResponse/cancel()`` or cancelling the consuming task removes the transfer).
/// There is no total timeout: only a connect timeout and an idle-stall watchdog.
///
/// ```swift
/// let client = HTTPClient()
/// let response = try await client.execute(HTTPRequest(method: "GET", url: "http://127.0.0.1:8080/events"))
/// for try await chunk in response { print(chunk.count) }
/// client.shutdown()
/// ```
public final class HTTPClient: Sendable {
    /// Settings of an ``HTTPClient``.
    public struct Configuration: Sendable {
        /// Longest time to establish a connection (TCP and TLS).
        public var connectTimeout: Duration
        /// A transfer that receives no bytes for this long (while not paused by its consumer) fails as `stalled`.
        public var idleTimeout: Duration
        /// Cap on connections per host; 0 means unlimited (HTTP/2 multiplexes streams over few connections).
        public var maxConnectionsPerHost: Int
        /// Size of the idle-connection cache.
        public var maxConnectionCache: Int
        /// Undelivered bytes above which a transfer is paused.
        public var highWaterMark: Int
        /// Undelivered bytes at or below which a paused transfer resumes.
        public var lowWaterMark: Int
        /// TCP keep-alive idle time and probe interval.
        public var tcpKeepAlive: Duration
        /// Print libcurl's verbose trace to stderr.
        public var verbose: Bool
        /// libcurl multi handles, each on its own thread; transfers are spread over them in turn. A streamed reply
        /// is decoded on its transfer's thread (`MessageStream.relay`), so this is also how many threads decode.
        public var threads: Int

        /// One thread per four cores, at least one: on two cores everything else saturates them long before one
        /// curl thread does (BENCHMARKS.md); a larger machine decodes more replies at once.
        public static var defaultThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / 4) }

        /// Creates a configuration.
        public init(
            connectTimeout: Duration = .seconds(10),
            idleTimeout: Duration = .seconds(300),
            maxConnectionsPerHost: Int = 0,
            maxConnectionCache: Int = 10_000,
            highWaterMark: Int = 256 * 1024,
            lowWaterMark: Int = 64 * 1024,
            tcpKeepAlive: Duration = .seconds(60),
            verbose: Bool = false,
            threads: Int = Configuration.defaultThreads
        ) {
            self.connectTimeout = connectTimeout
            self.idleTimeout = idleTimeout
            self.maxConnectionsPerHost = maxConnectionsPerHost
            self.maxConnectionCache = maxConnectionCache
            self.highWaterMark = highWaterMark
            self.lowWaterMark = lowWaterMark
            self.tcpKeepAlive = tcpKeepAlive
            self.verbose = verbose
            self.threads = max(1, threads)
        }
    }

    /// The configuration in use.
    public let configuration: Configuration
    private let loops: [CurlLoop]
    /// The loop the next transfer goes to, modulo `loops.count`.
    private let nextLoop = Atomic<UInt>(0)

    /// Creates a client and starts its curl threads.
    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        let options = CurlLoop.Options(
            connectTimeout: configuration.connectTimeout,
            idleTimeout: configuration.idleTimeout,
            maxConnectionsPerHost: configuration.maxConnectionsPerHost,
            maxConnectionCache: configuration.maxConnectionCache,
            tcpKeepAlive: configuration.tcpKeepAlive,
            verbose: configuration.verbose
        )
        loops = (0..<configuration.threads).map { _ in CurlLoop(options: options) }
    }

    deinit {
        for loop in loops { loop.stop(timeout: .zero) }
    }

    /// Starts a request and returns once the status and headers arrived.
    ///
    /// - Throws: ``HTTPClientError`` (connection, connect timeout, stall before headers, cancellation, shutdown).
    public func execute(_ request: HTTPRequest) async throws -> HTTPStreamingResponse {
        let loop = loops[Int(nextLoop.add(1, ordering: .relaxed).oldValue % UInt(loops.count))]
        let transfer = Transfer(
            request: request,
            highWaterMark: configuration.highWaterMark,
            lowWaterMark: configuration.lowWaterMark,
            loop: loop
        )
        loop.enqueue(.add(transfer))
        do {
            let head = try await transfer.awaitHead()
            return HTTPStreamingResponse(head: head, owner: TransferOwner(transfer))
        } catch {
            transfer.cancel()
            throw error
        }
    }

    /// Stops the curl thread, failing transfers still running with a `shutdown` error. Idempotent.
    public func shutdown() {
        for loop in loops { loop.stop() }
    }

    /// Transfers currently added to the multi handle (for leak tests).
    public var liveTransferCount: Int { loops.reduce(0) { $0 + $1.liveTransfers.load(ordering: .relaxed) } }

    /// How many times a transfer was paused because its consumer fell behind (backpressure).
    public var backpressurePauseCount: Int { loops.reduce(0) { $0 + $1.pauses.load(ordering: .relaxed) } }

    /// Sockets libcurl currently holds open, including idle cached connections (for leak tests).
    public var openConnectionCount: Int { loops.reduce(0) { $0 + $1.openSockets.load(ordering: .relaxed) } }
}

/// Cancels its transfer when the last response value or iterator referring to it goes away.
final class TransferOwner: Sendable {
    let transfer: Transfer

    init(_ transfer: Transfer) {
        self.transfer = transfer
    }

    deinit {
        transfer.cancel()
    }
}

/// A response whose body streams: status and headers are known, the body arrives as byte chunks.
///
/// Iterate it once. Dropping it (and its iterator) before the end cancels the transfer.
public struct HTTPStreamingResponse: Sendable, AsyncSequence {
    /// A chunk of body bytes as libcurl delivered it (boundaries are arbitrary).
    public typealias Element = [UInt8]

    /// The HTTP status code.
    public let status: Int
    /// The response header fields (case-insensitive lookup).
    public let headers: HTTPHeaders
    let owner: TransferOwner

    init(head: ResponseHead, owner: TransferOwner) {
        status = head.status
        headers = head.headers
        self.owner = owner
    }

    /// Iterates the body chunks.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let owner: TransferOwner

        /// The next chunk, or `nil` at the end of the body.
        public mutating func next() async throws -> [UInt8]? {
            try await owner.transfer.nextChunk()
        }
    }

    /// Creates the body iterator.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(owner: owner)
    }

    /// Has the rest of the body pushed to `sink` on the transfer's thread, instead of iterated: the chunks received
    /// so far first, then each in the write callback that read it, until the transfer ends (`sink.end`) or
    /// `sink.bytes` returns false. Use it instead of iterating, not besides.
    func push(to sink: TransferSink) {
        if let loop = owner.transfer.loop {
            loop.enqueue(.push(owner.transfer, sink))
        } else {
            _ = owner.transfer.startPushing(sink)  // the client is gone, and with it the transfer
        }
    }

    /// Stops the transfer now; the curl thread removes it and releases its connection.
    public func cancel() {
        owner.transfer.cancel()
    }

    /// Stops delivering the body but lets the transfer run to its natural end (reading and dropping the rest)
    /// so an HTTP/1.1 connection can be reused; if it has not ended within `grace`, it is cancelled.
    ///
    /// Use this when the application-level message is complete (e.g. after SSE `message_stop`) but the server
    /// may still send a few framing bytes, or may hold the socket open.
    public func discardRemainder(within grace: Duration = .seconds(1)) {
        owner.transfer.discardRemainder(within: grace)
    }

    /// Collects the whole body.
    ///
    /// - Throws: ``HTTPClientError`` with kind `bodyTooLarge` if more than `limit` bytes arrive.
    public func collect(upTo limit: Int) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await chunk in self {
            if bytes.count + chunk.count > limit {
                cancel()
                throw HTTPClientError(kind: .bodyTooLarge, message: "the body exceeds \(limit) bytes")
            }
            bytes += chunk
        }
        return bytes
    }
}
