internal import CCurl
import Foundation
import Synchronization

/// MCP's Streamable HTTP transport over libcurl: each JSON-RPC message is POSTed to the endpoint with
/// `Accept: application/json, text/event-stream`; a request is answered either by a JSON body or by an SSE stream
/// whose `data:` events carry the response (and any server messages sent before it). The `Mcp-Session-Id` the
/// server gives on `initialize` is sent on every later POST, with `MCP-Protocol-Version`.
///
/// Each POST runs a blocking easy handle on a thread of its own (tool calls are few and long; a shared multi loop
/// would buy nothing here), so nothing blocks Swift's cooperative pool. `close()` aborts running POSTs and sends
/// `DELETE` to end the session.
final class HTTPTransport: MCPTransport, @unchecked Sendable {  // mutable state lives in `state` (a Mutex)
    private struct State {
        var handlers: TransportHandlers?
        var sessionID: String?
        var closed = false
        var live: [ObjectIdentifier: HTTPExchange] = [:]
    }

    let url: URL
    let headers: [String: String]
    private let state = Mutex(State())
    static let protocolVersion = MCPConnection.protocolVersion

    init(url: URL, headers: [String: String]) {
        self.url = url
        self.headers = headers
        CurlGlobal.initialize
    }

    func start(_ handlers: TransportHandlers) throws {
        state.withLock { $0.handlers = handlers }
    }

    func send(_ message: [UInt8], requestID: Int?) {
        let (handlers, session, closed) = state.withLock { ($0.handlers, $0.sessionID, $0.closed) }
        guard let handlers, !closed else { return }
        var requestHeaders = headers
        requestHeaders["Content-Type"] = "application/json"
        requestHeaders["Accept"] = "application/json, text/event-stream"
        requestHeaders["MCP-Protocol-Version"] = Self.protocolVersion
        if let session { requestHeaders["Mcp-Session-Id"] = session }
        // The session id is taken the moment its header arrives: the answer to `initialize` may be read (and the next
        // request sent) before this POST's stream has ended.
        let exchange = HTTPExchange(
            method: "POST", url: url.absoluteString, headers: requestHeaders, body: message,
            onMessage: handlers.message,
            onSessionID: { [weak self] id in self?.state.withLock { if $0.sessionID == nil { $0.sessionID = id } } })
        state.withLock { $0.live[ObjectIdentifier(exchange)] = exchange }
        let thread = Thread { [self] in
            let outcome = exchange.perform()
            state.withLock { state in state.live[ObjectIdentifier(exchange)] = nil }
            switch outcome.result {
            case .success: break
            case .failure(let failure):
                let reason = failure.text
                if outcome.status == 404, session != nil {
                    // The server forgot the session (restarted, expired): this connection is over.
                    handlers.closed("the tool server ended the session (HTTP 404)")
                } else if let requestID {
                    handlers.requestFailed(requestID, reason)
                } else if outcome.tooLarge {
                    handlers.closed(reason)
                }
            }
        }
        thread.name = "mcp-http"
        thread.start()
    }

    func close() async {
        let (live, session, wasClosed) = state.withLock { state -> ([HTTPExchange], String?, Bool) in
            let snapshot = (Array(state.live.values), state.sessionID, state.closed)
            state.closed = true
            return snapshot
        }
        for exchange in live { exchange.abort() }
        guard !wasClosed, let session else { return }
        var requestHeaders = headers
        requestHeaders["Mcp-Session-Id"] = session
        requestHeaders["MCP-Protocol-Version"] = Self.protocolVersion
        let delete = HTTPExchange(
            method: "DELETE", url: url.absoluteString, headers: requestHeaders, body: [], onMessage: { _ in },
            totalTimeoutSeconds: 2)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                _ = delete.perform()
                continuation.resume()
            }
            thread.name = "mcp-http-delete"
            thread.start()
        }
    }
}

enum CurlGlobal {
    static let initialize: Void = { _ = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()
}

/// One HTTP request on a blocking easy handle: confined to the thread running `perform()`, except `abort()`.
final class HTTPExchange: @unchecked Sendable {  // curl state is touched only by the performing thread
    struct Outcome {
        var result: Result<Void, MCPErrorReason>
        var status: Int
        var sessionID: String?
        var tooLarge: Bool
    }

    struct MCPErrorReason: Error { let text: String }

    let method: String
    let url: String
    let headers: [String: String]
    let body: [UInt8]
    let onMessage: @Sendable ([UInt8]) -> Void
    let onSessionID: @Sendable (String) -> Void
    let totalTimeoutSeconds: Int
    private let aborted = Atomic<Bool>(false)

    private var status = 0
    private var contentType = ""
    private var sessionID: String?
    private var jsonBody: [UInt8] = []
    private var sse = SSEDataParser()
    private var tooLarge = false
    private var errorBody: [UInt8] = []

    init(
        method: String, url: String, headers: [String: String], body: [UInt8],
        onMessage: @escaping @Sendable ([UInt8]) -> Void, onSessionID: @escaping @Sendable (String) -> Void = { _ in },
        totalTimeoutSeconds: Int = 0
    ) {
        self.onSessionID = onSessionID
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.onMessage = onMessage
        self.totalTimeoutSeconds = totalTimeoutSeconds
    }

    func abort() { aborted.store(true, ordering: .relaxed) }

    func perform() -> Outcome {
        guard let easy = curl_easy_init() else {
            return Outcome(
                result: .failure(MCPErrorReason(text: "cannot create a curl handle")), status: 0, tooLarge: false)
        }
        defer { curl_easy_cleanup(easy) }
        var list: UnsafeMutablePointer<curl_slist>?
        for (name, value) in headers { list = curl_slist_append(list, "\(name): \(value)") }
        defer { curl_slist_free_all(list) }
        let context = Unmanaged.passUnretained(self).toOpaque()
        _ = ccurl_easy_setopt_string(easy, CURLOPT_URL, url)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, 10_000)
        if totalTimeoutSeconds > 0 { _ = ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT, totalTimeoutSeconds) }
        _ = ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list)
        _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, method)
        if method == "POST" {
            _ = ccurl_easy_setopt_long(easy, CURLOPT_POST, 1)
            _ = ccurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
        }
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, context)
        _ = ccurl_easy_setopt_write_function(easy) { pointer, size, count, user in
            let exchange = Unmanaged<HTTPExchange>.fromOpaque(user!).takeUnretainedValue()
            let bytes = UnsafeRawBufferPointer(start: pointer, count: size * count)
            return exchange.received(bytes) ? size * count : 0
        }
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, context)
        _ = ccurl_easy_setopt_header_function(easy) { pointer, size, count, user in
            let exchange = Unmanaged<HTTPExchange>.fromOpaque(user!).takeUnretainedValue()
            exchange.header(UnsafeRawBufferPointer(start: pointer, count: size * count))
            return size * count
        }
        _ = ccurl_easy_setopt_long(easy, CURLOPT_NOPROGRESS, 0)
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_XFERINFODATA, context)
        _ = ccurl_easy_setopt_xferinfo_function(easy) { user, _, _, _, _ in
            Unmanaged<HTTPExchange>.fromOpaque(user!).takeUnretainedValue().aborted.load(ordering: .relaxed) ? 1 : 0
        }
        let code = body.withUnsafeBytes { raw -> CURLcode in
            if method == "POST" {
                _ = ccurl_easy_setopt_pointer(
                    easy, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress))
            }
            return curl_easy_perform(easy)
        }
        var responseCode = 0
        _ = ccurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &responseCode)
        status = responseCode
        func fail(_ text: String) -> Outcome {
            Outcome(
                result: .failure(MCPErrorReason(text: text)), status: status, sessionID: sessionID, tooLarge: tooLarge)
        }
        if tooLarge { return fail("the tool server sent a message larger than \(MessageFramer.maxMessageBytes) bytes") }
        if aborted.load(ordering: .relaxed) { return fail("aborted") }
        guard code == CURLE_OK else {
            return fail("the tool server could not be reached (\(String(cString: curl_easy_strerror(code))))")
        }
        guard (200..<300).contains(status) else {
            let detail = String(decoding: errorBody.prefix(300), as: UTF8.self)
            return fail("the tool server answered HTTP \(status)\(detail.isEmpty ? "" : ": \(detail)")")
        }
        if !isSSE, !jsonBody.isEmpty { onMessage(jsonBody) }
        if isSSE { sse.finish().forEach(onMessage) }
        return Outcome(result: .success(()), status: status, sessionID: sessionID, tooLarge: false)
    }

    private var isSSE: Bool { contentType.hasPrefix("text/event-stream") }

    private func header(_ bytes: UnsafeRawBufferPointer) {
        let line = String(decoding: bytes, as: UTF8.self)
        if line.hasPrefix("HTTP/") {
            // A new response (after a redirect or 100 Continue): start over.
            contentType = ""
            status = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        switch name {
        case "content-type": contentType = value.lowercased()
        case "mcp-session-id":
            sessionID = value
            onSessionID(value)
        default: break
        }
    }

    /// Takes body bytes; false aborts the transfer (a message over the ceiling).
    private func received(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if isSSE, (200..<300).contains(status) {
            guard let messages = sse.feed(bytes) else {
                tooLarge = true
                return false
            }
            messages.forEach(onMessage)
            return true
        }
        if contentType.hasPrefix("application/json"), (200..<300).contains(status) {
            guard jsonBody.count + bytes.count <= MessageFramer.maxMessageBytes else {
                tooLarge = true
                return false
            }
            jsonBody.append(contentsOf: bytes)
        } else if errorBody.count < 1_000 {
            errorBody.append(contentsOf: bytes.prefix(1_000 - errorBody.count))
        }
        return true
    }
}

/// The `data:` of each Server-Sent Event, split on bytes (`\n`, `\r\n`, `\r`), holding at most one event.
struct SSEDataParser {
    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var lastWasCR = false

    /// The completed events' data; nil when one event grows past the message ceiling.
    mutating func feed(_ bytes: some Collection<UInt8>) -> [[UInt8]]? {
        var events: [[UInt8]] = []
        for byte in bytes {
            if lastWasCR {
                lastWasCR = false
                if byte == UInt8(ascii: "\n") { continue }
            }
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                lastWasCR = byte == UInt8(ascii: "\r")
                if let event = endLine() { events.append(event) }
                continue
            }
            line.append(byte)
            if line.count + data.count > MessageFramer.maxMessageBytes { return nil }
        }
        return events
    }

    /// Whatever event the stream ended inside of.
    mutating func finish() -> [[UInt8]] {
        if !line.isEmpty, let event = endLine() { return [event] }
        if let event = endLine() { return [event] }
        return []
    }

    private mutating func endLine() -> [UInt8]? {
        defer { line = [] }
        if line.isEmpty {
            guard hasData else { return nil }
            defer {
                data = []
                hasData = false
            }
            return data
        }
        let prefix = Array("data".utf8)
        guard line.starts(with: prefix) else { return nil }  // event:, id:, retry:, comments
        var value = line.dropFirst(prefix.count)
        if value.first == UInt8(ascii: ":") {
            value = value.dropFirst()
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        } else if !value.isEmpty {
            return nil  // a field such as "dataX"
        }
        if hasData { data.append(UInt8(ascii: "\n")) }
        data.append(contentsOf: value)
        hasData = true
        return nil
    }
}
