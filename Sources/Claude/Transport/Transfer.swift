internal import CCurl
import Synchronization

/// The status line and header fields of a response.
struct ResponseHead: Sendable {
    var status: Int
    var headers: HTTPHeaders
}

/// Where a transfer's body goes once its consumer asked for it to be pushed (`HTTPStreamingResponse.push`): both
/// closures run on the curl thread, in the write callback and when the transfer ends.
final class TransferSink: @unchecked Sendable {  // created by the consumer, then used only on the curl thread
    /// Takes the next bytes; returns false once the consumer wants no more (it then discards or cancels the rest).
    let bytes: (UnsafeRawBufferPointer) -> Bool
    /// The transfer ended: `nil` cleanly, else the failure. Not called after `bytes` returned false.
    let end: (HTTPClientError?) -> Void

    init(bytes: @escaping (UnsafeRawBufferPointer) -> Bool, end: @escaping (HTTPClientError?) -> Void) {
        self.bytes = bytes
        self.end = end
    }
}

/// One HTTP exchange: the part shared between the curl thread and the consumer lives in `shared` (a `Mutex`);
/// the easy handle and its buffers are touched only on the curl thread.
///
/// The consumer pulls the body (`nextChunk`), or has it pushed (`startPushing`): then every chunk goes to its sink in
/// the write callback itself, with no queue, no pause and no task to resume.
final class Transfer: @unchecked Sendable {  // curl-thread fields are confined to the CurlLoop thread
    struct Shared {
        var head: ResponseHead?
        var headWaiter: CheckedContinuation<ResponseHead, any Error>?
        var chunks: [[UInt8]] = []
        var chunkIndex = 0
        var bufferedBytes = 0
        var paused = false
        var resumeRequested = false
        var waiter: CheckedContinuation<[UInt8]?, any Error>?
        var end: HTTPClientError??  // nil: running; .some(nil): finished cleanly; .some(error): failed
        var cancelRequested = false
        var discarding = false
    }

    let request: HTTPRequest
    let highWaterMark: Int
    let lowWaterMark: Int
    let shared = Mutex(Shared())
    weak var loop: CurlLoop?

    // Curl-thread confined.
    var easy: UnsafeMutableRawPointer?
    var headerList: UnsafeMutablePointer<curl_slist>?
    var pendingStatus = 0
    var pendingHeaders = HTTPHeaders()
    var lastActivity: ContinuousClock.Instant = .now
    var curlPaused = false
    var discardDeadline: ContinuousClock.Instant?
    var headPublished = false
    /// Set while the body is pushed (curl thread only).
    var sink: TransferSink?
    let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return buffer
    }()

    deinit {
        errorBuffer.deallocate()
    }

    init(request: HTTPRequest, highWaterMark: Int, lowWaterMark: Int, loop: CurlLoop) {
        self.request = request
        self.highWaterMark = highWaterMark
        self.lowWaterMark = lowWaterMark
        self.loop = loop
    }

    // MARK: Consumer side

    /// Waits until the status and headers arrived (or the transfer failed).
    func awaitHead() async throws -> ResponseHead {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ResponseHead, any Error>) in
                let immediate: Result<ResponseHead, any Error>? = shared.withLock { s in
                    if let head = s.head { return .success(head) }
                    if case .some(let end) = s.end {
                        return .failure(
                            end ?? HTTPClientError(kind: .connection, message: "transfer ended without a response"))
                    }
                    s.headWaiter = continuation
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Returns the next body chunk, `nil` at the end, or throws the transfer's failure.
    func nextChunk() async throws -> [UInt8]? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8]?, any Error>) in
                var sendResume = false
                let immediate: Result<[UInt8]?, any Error>? = shared.withLock { s in
                    if s.chunkIndex < s.chunks.count {
                        let chunk = s.chunks[s.chunkIndex]
                        s.chunkIndex += 1
                        if s.chunkIndex == s.chunks.count {
                            s.chunks.removeAll(keepingCapacity: true)
                            s.chunkIndex = 0
                        }
                        s.bufferedBytes -= chunk.count
                        if s.paused && !s.resumeRequested && s.bufferedBytes <= lowWaterMark {
                            s.resumeRequested = true
                            sendResume = true
                        }
                        return .success(chunk)
                    }
                    if case .some(let end) = s.end {
                        if let end { return .failure(end) }
                        return .success(nil)
                    }
                    if s.paused && !s.resumeRequested {
                        s.resumeRequested = true
                        sendResume = true
                    }
                    s.waiter = continuation
                    return nil
                }
                if sendResume { loop?.enqueue(.resume(self)) }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Cancels the transfer from any thread; the curl thread removes and cleans it up.
    func cancel() {
        let send = shared.withLock { s -> Bool in
            guard case .none = s.end, !s.cancelRequested, !s.discarding else { return false }
            s.cancelRequested = true
            return true
        }
        if send {
            if let loop {
                loop.enqueue(.cancel(self))
            } else {
                finish(HTTPClientError(kind: .shutdown, message: "the HTTP client was shut down"))
            }
        }
    }

    /// Stops delivering the body: the rest is read and dropped so the connection can be reused, and the
    /// transfer is cancelled if it has not ended within `grace`.
    func discardRemainder(within grace: Duration) {
        let send = shared.withLock { s -> Bool in
            guard case .none = s.end, !s.cancelRequested, !s.discarding else { return false }
            s.discarding = true
            s.chunks.removeAll()
            s.chunkIndex = 0
            s.bufferedBytes = 0
            return true
        }
        if send { loop?.enqueue(.discard(self, within: grace)) }
    }

    var isFinished: Bool {
        shared.withLock { s in
            if case .some = s.end { return true }
            return false
        }
    }

    // MARK: Curl thread side

    /// Accepts body bytes from the write callback; returns `false` when the transfer should pause instead.
    func deliver(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if !headPublished { publishHeadIfNeeded() }
        if let sink {
            if !sink.bytes(bytes) { self.sink = nil }
            return true
        }
        enum Outcome {
            case handOver(CheckedContinuation<[UInt8]?, any Error>)
            case buffered, discarded, pause
        }
        let outcome: Outcome = shared.withLock { s in
            if s.discarding { return .discarded }
            if let waiter = s.waiter {
                s.waiter = nil
                return .handOver(waiter)
            }
            if s.bufferedBytes >= highWaterMark {
                s.paused = true
                return .pause
            }
            s.chunks.append(Array(bytes))
            s.bufferedBytes += bytes.count
            return .buffered
        }
        switch outcome {
        case .handOver(let waiter):
            waiter.resume(returning: Array(bytes))
            return true
        case .buffered, .discarded:
            return true
        case .pause:
            curlPaused = true
            return false
        }
    }

    /// Parses one header line from the header callback.
    func receiveHeaderLine(_ line: UnsafeRawBufferPointer) {
        var text = String(decoding: line, as: UTF8.self)
        while text.last == "\n" || text.last == "\r" || text.last == "\r\n" { text.removeLast() }
        if text.hasPrefix("HTTP/") {
            let parts = text.split(separator: " ", maxSplits: 2)
            pendingStatus = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            pendingHeaders = HTTPHeaders()
        } else if text.isEmpty {
            if pendingStatus >= 200 { publishHeadIfNeeded() }
        } else if let colon = text.firstIndex(of: ":") {
            let name = String(text[..<colon])
            let value = text[text.index(after: colon)...].trimmingSpaces()
            pendingHeaders.add(name: name, value: value)
        }
    }

    func publishHeadIfNeeded() {
        headPublished = true
        let waiter: (CheckedContinuation<ResponseHead, any Error>, ResponseHead)? = shared.withLock { s in
            guard s.head == nil else { return nil }
            let head = ResponseHead(status: pendingStatus, headers: pendingHeaders)
            s.head = head
            defer { s.headWaiter = nil }
            return s.headWaiter.map { ($0, head) }
        }
        if let (continuation, head) = waiter { continuation.resume(returning: head) }
    }

    /// Ends the transfer: `nil` for a clean end, else the failure. Idempotent.
    func finish(_ error: HTTPClientError?) {
        if error == nil { publishHeadIfNeeded() }
        let (headWaiter, waiter) = shared.withLock {
            s -> (CheckedContinuation<ResponseHead, any Error>?, CheckedContinuation<[UInt8]?, any Error>?) in
            guard case .none = s.end else { return (nil, nil) }
            s.end = .some(error)
            defer {
                s.headWaiter = nil
                s.waiter = nil
            }
            return (s.headWaiter, s.waiter)
        }
        let failure = error ?? HTTPClientError(kind: .connection, message: "transfer ended without a response")
        headWaiter?.resume(throwing: failure)
        if let error {
            waiter?.resume(throwing: error)
        } else {
            waiter?.resume(returning: nil)
        }
        if let sink {
            self.sink = nil
            sink.end(error)
        }
    }

    /// Hands the chunks received so far, and then every later one, to `sink`: called on the curl thread (or once the
    /// loop is gone, when nothing runs there any more). Returns whether the transfer is paused and must be resumed.
    func startPushing(_ sink: TransferSink) -> Bool {
        let (pending, end, paused) = shared.withLock { s -> ([[UInt8]], HTTPClientError??, Bool) in
            defer {
                s.chunks.removeAll()
                s.chunkIndex = 0
                s.bufferedBytes = 0
            }
            return (Array(s.chunks[s.chunkIndex...]), s.end, s.paused)
        }
        for chunk in pending {
            guard chunk.withUnsafeBytes(sink.bytes) else { return false }
        }
        if case .some(let end) = end {
            sink.end(end)
            return false
        }
        self.sink = sink
        return paused
    }

    /// Called on the curl thread when a resume command arrives.
    func markResumed() {
        shared.withLock { s in
            s.paused = false
            s.resumeRequested = false
        }
        curlPaused = false
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        var s = self[...]
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
