import Foundation
import Logging

/// A streamed reply: typed events, ending after `message_stop`; failures throw ``ClaudeError``.
///
/// - The request is sent when iteration starts. Failures before any content event reached the consumer are
///   retried per ``RetryPolicy`` (non-2xx, connection errors, and a stream that fails before its first content
///   event). Pre-content events (`message_start`, `content_block_start`, `ping`) of an attempt are held back and
///   released together with its first content event, so a retry is invisible; the first delta is not delayed.
/// - After content was delivered nothing is retried: an `event: error` throws an `api` error (status 200), an
///   end without `message_stop` throws `truncated`, silence beyond the idle timeout throws `stalled`.
/// - After `message_stop` the transfer is released at once, even if the server keeps the socket open.
/// - Cancelling the consuming task, or dropping the iterator, cancels the transfer.
public struct MessageStream: AsyncSequence, Sendable {
    /// The element type.
    public typealias Element = MessageStreamEvent
    /// The failure type.
    public typealias Failure = ClaudeError

    let client: ClaudeClient
    let request: MessagesRequest

    /// Iterates the events of one request.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let driver: StreamDriver

        /// The next event, or `nil` after `message_stop`.
        public mutating func next() async throws(ClaudeError) -> MessageStreamEvent? {
            try await driver.next()
        }
    }

    /// Starts a new request on first `next()`.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(driver: StreamDriver(client: client, request: request))
    }

    /// Hands every event to `deliver`, in order, and returns after `message_stop`; failures throw as from `next()`,
    /// and the same failures are retried (those before any content event was delivered).
    ///
    /// Once a response's status and headers are in, the transport pushes the bytes it reads to the decoder, and
    /// `deliver` runs right there, on the transport's thread, in the callback that read them: an event costs no queue,
    /// no task to resume and no hand-off between threads, and the first content is not held up by a busy task pool.
    /// So `deliver` must be quick and must never block. The request, its retries and their back-off run where the
    /// caller runs. `deliver` is never called after this returned.
    public func relay(_ deliver: @escaping @Sendable (MessageStreamEvent) -> Void) async throws(ClaudeError) {
        try await StreamDriver(client: client, request: request).relay(to: deliver)
    }
}

/// The state of one streamed request: pulled by its iterator (`next()`), or pushed by the transport (`relay(to:)`).
final class StreamDriver: @unchecked Sendable {  // used by one thread at a time: the task, or the curl thread pushing
    let client: ClaudeClient
    let request: MessagesRequest
    private var body: [UInt8]?
    private var response: HTTPStreamingResponse?
    private var iterator: HTTPStreamingResponse.AsyncIterator?
    private var decoder = SSEDecoder()
    private var ready: [MessageStreamEvent] = []
    private var readyIndex = 0
    private var held: [MessageStreamEvent] = []
    private var contentDelivered = false
    private var finished = false
    private var attempts = 0
    private var requestID: String?
    private var usage = Usage()

    init(client: ClaudeClient, request: MessagesRequest) {
        self.client = client
        self.request = request
    }

    deinit {
        response?.cancel()
    }

    func next() async throws(ClaudeError) -> MessageStreamEvent? {
        while true {
            if readyIndex < ready.count {
                let event = ready[readyIndex]
                readyIndex += 1
                if readyIndex == ready.count {
                    ready.removeAll(keepingCapacity: true)
                    readyIndex = 0
                }
                return event
            }
            if finished { return nil }
            do {
                try await step()
            } catch {
                finished = true
                release()
                throw error
            }
        }
    }

    /// Opens the next attempt's response (the client retries what fails before its headers).
    private func open() async throws(ClaudeError) -> HTTPStreamingResponse {
        if body == nil { body = try request.normalized().jsonBody(stream: true) }
        let opened = try await client.open(body: body!, stream: true, attempts: &attempts)
        response = opened
        requestID = opened.headers["request-id"]
        decoder = SSEDecoder()
        held.removeAll()
        usage = Usage()
        return opened
    }

    /// Opens a response if needed, then reads one chunk and turns it into events.
    private func step() async throws(ClaudeError) {
        if iterator == nil { iterator = try await open().makeAsyncIterator() }
        let chunk: [UInt8]?
        do {
            chunk = try await iterator!.next()
        } catch {
            if Task.isCancelled {
                throw ClaudeError(kind: .cancelled, message: "cancelled", requestID: requestID, attempts: attempts)
            }
            try await failAttempt(endFailure(error))
            return
        }
        guard let chunk else {
            try await failAttempt(endFailure(nil))
            return
        }
        for event in decoder.feed(chunk) {
            if let failure = handle(event) {
                try await failAttempt(failure)
                return
            }
            if finished {
                complete()
                return
            }
        }
    }

    /// `MessageStream.relay`: each attempt's body is pushed through the decoder into `deliver` on the transport's
    /// thread, until `message_stop`; a failed attempt is retried as in `next()` while no content was delivered.
    func relay(to deliver: @escaping @Sendable (MessageStreamEvent) -> Void) async throws(ClaudeError) {
        while true {
            let response = try await open()
            guard let failure = await push(response, to: deliver) else { return }
            try await failAttempt(failure)
        }
    }

    /// Pushes one attempt's body: nil once `message_stop` was delivered, else what ended the attempt.
    private func push(_ response: HTTPStreamingResponse, to deliver: @escaping @Sendable (MessageStreamEvent) -> Void)
        async -> ClaudeError?
    {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<ClaudeError?, Never>) in
                // Both closures run on the curl thread, one at a time; `done` makes the outcome reported once.
                var done = false
                let end = { (failure: ClaudeError?) in
                    done = true
                    continuation.resume(returning: failure)
                }
                response.push(
                    to: TransferSink(
                        bytes: { bytes in
                            guard !done else { return false }
                            if let failure = self.decode(bytes, deliveringTo: deliver) {
                                self.release()
                                end(failure)
                                return false
                            }
                            guard self.finished else { return true }
                            self.complete()
                            end(nil)
                            return false
                        },
                        end: { error in
                            guard !done else { return }
                            end(self.endFailure(error))
                        }))
            }
        } onCancel: {
            response.cancel()
        }
    }

    /// Feeds pushed bytes to the decoder and delivers each event as `next()` would return it (the events before the
    /// first content are held back until it comes); returns the failure that ends the attempt, if the bytes hold one
    /// (`event: error`).
    private func decode(_ bytes: UnsafeRawBufferPointer, deliveringTo deliver: (MessageStreamEvent) -> Void)
        -> ClaudeError?
    {
        for event in decoder.feed(bytes) {
            let failure = handle(event)
            for decoded in ready { deliver(decoded) }
            ready.removeAll(keepingCapacity: true)
            if let failure { return failure }
            if finished { return nil }
        }
        return nil
    }

    /// What ends an attempt whose body stopped before `message_stop`: `error`, or a clean end (`nil`).
    private func endFailure(_ error: (any Error)?) -> ClaudeError {
        guard let error else {
            decoder.finish()
            return ClaudeError(
                kind: .truncated, status: 200, message: "the stream ended before message_stop", requestID: requestID,
                isRetryable: true, attempts: attempts)
        }
        return client.mapTransportError(error, attempts: attempts, afterHead: true, requestID: requestID)
    }

    /// The reply is complete: stop delivering at once, but let the connection finish cleanly.
    private func complete() {
        response?.discardRemainder(within: .seconds(1))
        response = nil
        iterator = nil
    }

    /// Retries if nothing was delivered yet and the failure allows it; otherwise throws it.
    private func failAttempt(_ failure: ClaudeError) async throws(ClaudeError) {
        release()
        let policy = client.retryPolicy
        guard !contentDelivered, failure.isRetryable, policy.hasBudget(retriesSoFar: attempts - 1) else {
            var final = failure
            if contentDelivered { final.isRetryable = false }
            throw final
        }
        let delay = policy.delay(headers: HTTPHeaders(), retriesSoFar: attempts - 1)
        client.logger.info(
            "retrying Claude stream that failed before content",
            metadata: [
                "attempt": "\(attempts)", "kind": "\(failure.kind)", "request-id": "\(failure.requestID ?? "-")",
            ]
        )
        try await client.sleep(delay, attempts: attempts)
    }

    private func release() {
        response?.cancel()
        response = nil
        iterator = nil
    }

    /// Maps one SSE event; returns a failure for an `error` event.
    private func handle(_ sse: SSEEvent) -> ClaudeError? {
        if sse.event == nil || sse.event == "content_block_delta", let delta = TextDeltaShape.match(sse.data) {
            emit(.textDelta(index: delta.index, text: delta.text), isContent: true)
            return nil
        }
        guard let json = try? JSONValue(parsing: sse.data), let wire = WireEvent(json) else {
            if sse.event == "error" {
                return ClaudeError(kind: .api, status: 200, message: sse.data, requestID: requestID, attempts: attempts)
            }
            return nil
        }
        switch sse.event ?? wire.type {
        case "message_start":
            let message = wire.message
            usage = message?.usage?.merged(into: Usage()) ?? Usage()
            let start = MessageStart(
                id: message?.id ?? "", model: message?.model ?? "", usage: usage, requestID: requestID,
                attempts: attempts
            )
            emit(.messageStart(start), isContent: false)
        case "content_block_start":
            let index = wire.index ?? 0
            let block = wire.content_block
            switch block?.type {
            case "tool_use":
                emit(.toolUseStart(index: index, id: block?.id ?? "", name: block?.name ?? ""), isContent: false)
            case "redacted_thinking":
                emit(.redactedThinking(index: index, data: block?.data ?? ""), isContent: false)
            default:
                emit(.contentBlockStart(index: index, type: block?.type ?? "unknown"), isContent: false)
            }
        case "ping":
            emit(.ping, isContent: false)
        case "content_block_delta":
            let index = wire.index ?? 0
            switch wire.delta?.type {
            case "text_delta":
                emit(.textDelta(index: index, text: wire.delta?.text ?? ""), isContent: true)
            case "input_json_delta":
                emit(.inputJSONDelta(index: index, partialJSON: wire.delta?.partial_json ?? ""), isContent: true)
            case "thinking_delta":
                emit(.thinkingDelta(index: index, thinking: wire.delta?.thinking ?? ""), isContent: true)
            case "signature_delta":
                emit(.signatureDelta(index: index, signature: wire.delta?.signature ?? ""), isContent: true)
            default:
                emit(.otherDelta(index: index, type: wire.delta?.type ?? "unknown"), isContent: true)
            }
        case "content_block_stop":
            emit(.contentBlockStop(index: wire.index ?? 0), isContent: true)
        case "message_delta":
            usage = wire.usage?.merged(into: usage) ?? usage
            emit(
                .messageDelta(
                    stopReason: wire.delta?.stop_reason, stopSequence: wire.delta?.stop_sequence, usage: usage),
                isContent: true)
        case "message_stop":
            emit(.messageStop, isContent: true)
            finished = true
        case "error":
            let type = wire.error?.type
            let retryable = ["overloaded_error", "api_error", "rate_limit_error", "timeout_error"].contains(type ?? "")
            return ClaudeError(
                kind: .api, status: 200, type: type, message: wire.error?.message ?? sse.data,
                requestID: requestID ?? wire.request_id, isRetryable: retryable, attempts: attempts
            )
        default:
            break
        }
        return nil
    }

    private func emit(_ event: MessageStreamEvent, isContent: Bool) {
        if contentDelivered {
            ready.append(event)
        } else if isContent {
            ready += held
            held.removeAll()
            ready.append(event)
            contentDelivered = true
        } else {
            held.append(event)
        }
    }
}
