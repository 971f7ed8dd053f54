import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A small HTTP/1.1 client over raw loopback sockets, for end-to-end tests of the service.
///
/// Raw sockets on purpose: a test can see each SSE event the moment its bytes arrive, and can drop the connection
/// mid-stream with a real `close()`, exactly as a browser tab closing would. Blocking I/O runs on a thread per
/// connection, never on Swift's cooperative pool.
public enum TestHTTP {
    /// A complete response.
    public struct Response: Sendable {
        public var status: Int
        /// Header names lowercased.
        public var headers: [String: String]
        public var body: [UInt8]

        public var text: String { String(decoding: body, as: UTF8.self) }

        /// The body parsed as a JSON object (empty when it is not one).
        public var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]) ?? [:]
        }
    }

    /// A blocking TCP socket connected to 127.0.0.1:`port` (the caller closes it), for tests that speak raw bytes.
    public static func connectedSocket(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestHTTPError("socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw TestHTTPError("connect to 127.0.0.1:\(port) failed (errno \(errno))")
        }
        return fd
    }

    /// Sends one request and reads the whole response.
    public static func request(
        port: Int, method: String, path: String, headers: [String: String] = [:], body: [UInt8]? = nil,
        rawRequest: [UInt8]? = nil
    ) async throws -> Response {
        let connection = try await Connection.open(port: port)
        defer { connection.close() }
        try connection.send(rawRequest ?? requestBytes(method: method, path: path, headers: headers, body: body))
        return try await connection.readResponse()
    }

    /// POSTs JSON and returns the response.
    public static func postJSON(
        port: Int, path: String, json: [String: any Sendable], headers: [String: String] = [:]
    ) async throws -> Response {
        let body = try JSONSerialization.data(withJSONObject: json)
        var all = headers
        all["Content-Type"] = all["Content-Type"] ?? "application/json"
        return try await request(port: port, method: "POST", path: path, headers: all, body: Array(body))
    }

    /// Starts a request whose response is read as a stream of SSE events.
    public static func openEventStream(
        port: Int, path: String = "/query_stream", json: [String: any Sendable], headers: [String: String] = [:]
    ) async throws -> EventStream {
        let body = try JSONSerialization.data(withJSONObject: json)
        var all = headers
        all["Content-Type"] = "application/json"
        all["Accept"] = "text/event-stream"
        let connection = try await Connection.open(port: port)
        try connection.send(requestBytes(method: "POST", path: path, headers: all, body: Array(body)))
        return try await EventStream(connection: connection)
    }

    /// Starts a request without a body (`GET /threads/{id}/stream`) whose response is read as SSE events.
    public static func openEventStream(
        port: Int, method: String, path: String, headers: [String: String] = [:]
    ) async throws -> EventStream {
        var all = headers
        all["Accept"] = "text/event-stream"
        let connection = try await Connection.open(port: port)
        try connection.send(requestBytes(method: method, path: path, headers: all, body: nil))
        return try await EventStream(connection: connection)
    }

    /// Sends `request` and reads at most `limit` bytes of the raw response, then drops the connection: a client that
    /// lost its network after exactly that much.
    public static func readPartial(port: Int, request: [UInt8], limit: Int) async throws -> [UInt8] {
        let fd = try connectedSocket(port: port)
        return try await withCheckedThrowingContinuation { continuation in
            Thread {
                defer { Glibc.close(fd) }
                var sent = 0
                while sent < request.count {
                    let n = request[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
                    guard n > 0 else {
                        continuation.resume(throwing: TestHTTPError("send failed (errno \(errno))"))
                        return
                    }
                    sent += n
                }
                var received: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while received.count < limit {
                    let n = buffer.withUnsafeMutableBytes {
                        Glibc.recv(fd, $0.baseAddress, min($0.count, limit - received.count), 0)
                    }
                    if n <= 0 { break }
                    received += buffer[0..<n]
                }
                continuation.resume(returning: received)
            }.start()
        }
    }

    /// The complete SSE events in a raw HTTP/1.1 response that may have been cut anywhere (a chunked body, as the
    /// service streams): what an SSE client would have dispatched before the connection dropped.
    public static func completeEvents(inRawResponse raw: [UInt8]) -> [ReceivedEvent] {
        guard let headEnd = (0..<max(raw.count - 3, 0)).first(where: { raw[$0..<($0 + 4)].elementsEqual([13, 10, 13, 10]) })
        else { return [] }
        var body: [UInt8] = []
        var index = headEnd + 4
        while index < raw.count {
            guard let lineEnd = (index..<max(raw.count - 1, index)).first(where: { raw[$0] == 13 && raw[$0 + 1] == 10 }),
                let size = Int(String(decoding: raw[index..<lineEnd], as: UTF8.self), radix: 16)
            else { break }
            let start = lineEnd + 2
            let end = min(start + size, raw.count)
            body += raw[start..<end]
            if size == 0 || end < start + size { break }
            index = end + 2
        }
        var events: [ReceivedEvent] = []
        var blockStart = 0
        var position = 0
        while position + 1 < body.count {
            if body[position] == 10, body[position + 1] == 10 {
                let block = String(decoding: body[blockStart..<position], as: UTF8.self)
                var data: [String] = []
                var id: String?
                var comment: String?
                for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line.hasPrefix(":") { comment = String(line.dropFirst()).trimmingCharacters(in: .whitespaces) }
                    if line.hasPrefix("id:") { id = String(line.dropFirst(3)).trimmingCharacters(in: .whitespaces) }
                    if line.hasPrefix("data:") {
                        var value = line.dropFirst(5)
                        if value.first == " " { value = value.dropFirst() }
                        data.append(String(value))
                    }
                }
                events.append(
                    ReceivedEvent(
                        data: data.isEmpty ? nil : data.joined(separator: "\n"), comment: comment, id: id, arrival: .now))
                position += 2
                blockStart = position
            } else {
                position += 1
            }
        }
        return events
    }

    public static func requestBytes(method: String, path: String, headers: [String: String], body: [UInt8]?) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "Connection: close\r\n\r\n"
        return Array(head.utf8) + (body ?? [])
    }
}

/// One SSE event (or comment) as received, with its arrival time.
public struct ReceivedEvent: Sendable {
    /// The joined `data:` lines; nil for a comment-only block.
    public var data: String?
    /// The comment text (without the colon) for `: ping` style blocks.
    public var comment: String?
    /// The `id:` field (the resume point of a chunk).
    public var id: String?
    public var arrival: ContinuousClock.Instant

    /// `data` parsed as a JSON object.
    public var json: [String: Any] {
        guard let data else { return [:] }
        return (try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]) ?? [:]
    }

    public var chunk: String? { json["chunk"] as? String }
    public var isDone: Bool { (json["done"] as? Bool) == true }
    public var error: [String: Any]? { json["error"] as? [String: Any] }
}

/// The events of one streamed response.
public final class EventStream: Sendable {
    public let status: Int
    public let headers: [String: String]
    private let connection: Connection
    private let events: AsyncStream<ReceivedEvent>
    /// Bytes of a non-SSE (error) body.
    public let body: [UInt8]

    init(connection: Connection) async throws {
        self.connection = connection
        let head = try await connection.readHead()
        status = head.status
        headers = head.headers
        if head.headers["content-type"]?.hasPrefix("text/event-stream") == true {
            body = []
            events = connection.eventStream(chunked: head.headers["transfer-encoding"] == "chunked")
        } else {
            body = try await connection.readBody(headers: head.headers)
            events = AsyncStream { $0.finish() }
        }
    }

    /// Every remaining event until the server ends the stream.
    public func all() async -> [ReceivedEvent] {
        var result: [ReceivedEvent] = []
        for await event in events { result.append(event) }
        return result
    }

    /// The events, as they arrive.
    public var stream: AsyncStream<ReceivedEvent> { events }

    /// Drops the connection, as a closing browser tab does.
    public func close() { connection.close() }

    /// A reader that can stop part-way (e.g. at the first chunk) and continue later.
    public func reader() -> EventReader { EventReader(iterator: events.makeAsyncIterator()) }
}

/// Reads a stream's events in steps.
public struct EventReader {
    var iterator: AsyncStream<ReceivedEvent>.Iterator

    /// The events up to and including the first `chunk` (all of them if none comes).
    public mutating func untilFirstChunk() async -> [ReceivedEvent] {
        var events: [ReceivedEvent] = []
        while let event = await iterator.next() {
            events.append(event)
            if event.chunk != nil { break }
        }
        return events
    }

    /// The next event; nil once the server ended the stream.
    public mutating func next() async -> ReceivedEvent? { await iterator.next() }

    /// Every remaining event until the server ends the stream.
    public mutating func rest() async -> [ReceivedEvent] {
        var events: [ReceivedEvent] = []
        while let event = await iterator.next() { events.append(event) }
        return events
    }
}

/// A blocking socket confined to its reader thread; `close()` may come from anywhere (it only shuts it down).
final class Connection: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSLock()
    private var buffer: [UInt8] = []
    private var closed = false

    private init(fd: Int32) { self.fd = fd }

    static func open(port: Int) async throws -> Connection {
        let fd = try TestHTTP.connectedSocket(port: port)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return Connection(fd: fd)
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { throw TestHTTPError("send failed (errno \(errno))") }
            offset += written
        }
    }

    func close() {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { return }
        closed = true
        // shutdown wakes a reader blocked in recv with EOF; the descriptor itself is closed only in deinit, so its
        // number cannot be reused by a new connection while a reader thread of this one may still call recv on it.
        shutdown(fd, Int32(SHUT_RDWR))
    }

    deinit { Glibc.close(fd) }

    /// Reads more bytes into the buffer; false at end of stream. Blocking: call on a dedicated thread.
    private func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return false }
        buffer.append(contentsOf: chunk[0..<count])
        return true
    }

    private func readLine() throws -> String {
        while true {
            if let index = buffer.firstIndex(of: 0x0A) {
                var line = Array(buffer[..<index])
                buffer.removeSubrange(...index)
                if line.last == 0x0D { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            guard fill() else { throw TestHTTPError("connection closed while reading a line") }
        }
    }

    private func readExactly(_ count: Int) throws -> [UInt8] {
        while buffer.count < count {
            guard fill() else { throw TestHTTPError("connection closed while reading \(count) bytes") }
        }
        let result = Array(buffer[..<count])
        buffer.removeSubrange(..<count)
        return result
    }

    func readHead() async throws -> (status: Int, headers: [String: String]) {
        try await onThread { try self.readHeadBlocking() }
    }

    private func readHeadBlocking() throws -> (status: Int, headers: [String: String]) {
        let statusLine = try readLine()
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else {
            throw TestHTTPError("bad status line '\(statusLine)'")
        }
        var headers: [String: String] = [:]
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name] = headers[name].map { "\($0), \(value)" } ?? value
        }
        return (status, headers)
    }

    func readBody(headers: [String: String]) async throws -> [UInt8] {
        try await onThread { try self.readBodyBlocking(headers: headers) }
    }

    private func readBodyBlocking(headers: [String: String]) throws -> [UInt8] {
        if headers["transfer-encoding"] == "chunked" {
            var body: [UInt8] = []
            while let chunk = try readChunk() { body += chunk }
            return body
        }
        if let length = headers["content-length"].flatMap(Int.init) { return try readExactly(length) }
        while fill() {}
        defer { buffer = [] }
        return buffer
    }

    /// One chunk of a chunked body; nil after the last.
    private func readChunk() throws -> [UInt8]? {
        let sizeLine = try readLine()
        guard let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else {
            throw TestHTTPError("bad chunk size '\(sizeLine)'")
        }
        if size == 0 {
            _ = try? readLine()
            return nil
        }
        let data = try readExactly(size)
        _ = try readLine()
        return data
    }

    func readResponse() async throws -> TestHTTP.Response {
        try await onThread {
            let head = try self.readHeadBlocking()
            let body = try self.readBodyBlocking(headers: head.headers)
            return TestHTTP.Response(status: head.status, headers: head.headers, body: body)
        }
    }

    /// Decodes the body as SSE on a reader thread; the stream ends when the server ends the body or the
    /// connection is closed.
    func eventStream(chunked: Bool) -> AsyncStream<ReceivedEvent> {
        let (stream, continuation) = AsyncStream<ReceivedEvent>.makeStream()
        let thread = Thread {
            var pending: [UInt8] = []
            func emit() {
                // Split complete blocks at a blank line (the service writes LF only).
                while let range = Self.blankLine(in: pending) {
                    let block = String(decoding: pending[..<range.lowerBound], as: UTF8.self)
                    pending.removeSubrange(..<range.upperBound)
                    var data: [String] = []
                    var comment: String?
                    var id: String?
                    for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                        if line.hasPrefix(":") {
                            comment = String(line.dropFirst()).trimmingCharacters(in: .whitespaces)
                        } else if line.hasPrefix("id:") {
                            id = String(line.dropFirst(3)).trimmingCharacters(in: .whitespaces)
                        } else if line.hasPrefix("data:") {
                            var value = line.dropFirst(5)
                            if value.first == " " { value = value.dropFirst() }
                            data.append(String(value))
                        }
                    }
                    continuation.yield(
                        ReceivedEvent(
                            data: data.isEmpty ? nil : data.joined(separator: "\n"), comment: comment, id: id,
                            arrival: .now))
                }
            }
            do {
                if chunked {
                    while let chunk = try self.readChunk() {
                        pending += chunk
                        emit()
                    }
                } else {
                    while self.fill() {
                        pending += self.buffer
                        self.buffer = []
                        emit()
                    }
                }
            } catch {}
            continuation.finish()
        }
        thread.start()
        return stream
    }

    private static func blankLine(in bytes: [UInt8]) -> Range<Int>? {
        guard bytes.count >= 2 else { return nil }
        for index in 0..<(bytes.count - 1) where bytes[index] == 0x0A && bytes[index + 1] == 0x0A {
            return index..<(index + 2)
        }
        return nil
    }
}

public struct TestHTTPError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
