import ArgumentParser
import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `agent-bench resume`: how fast a dropped stream resumes, on the same instance and on another one, and what a
/// resumed turn costs the database.
struct ResumeBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Drop streams mid-reply and resume them on the same and on another instance; print latencies and database work.",
        discussion: """
            Starts two release services (A and B) on one throwaway Postgres and the stub. Each round streams a turn \
            from A, drops the connection after --chunks chunks, waits --gap-ms (so there is text to catch up on) and \
            resumes with the last id, on A (same instance) or on B (another instance). Reported: reconnect to first \
            missed byte (connect, request, first chunk frame), whether the resumed text joined up exactly, and, from \
            both services' /metrics, database round trips and NOTIFYs per turn against turns nobody resumed.
            """
    )

    @Option(help: "Turns per mode.")
    var rounds = 20

    @Option(help: "Chunks read before the connection is dropped.")
    var chunks = 5

    @Option(help: "Milliseconds between the drop and the reconnect.")
    var gapMs = 100

    @Option(help: "The agent-service binary.")
    var binary = ".build/release/agent-service"

    func run() async throws {
        let topology = try await BenchTopology.start(
            binary: binary, benchBinary: CommandLine.arguments[0],
            stubArguments: ["--deltas", "60", "--interval-ms", "20", "--first-ms", "20"])
        let other: ChildProcess
        do {
            other = try await topology.startAnotherService(binary: binary)
        } catch {
            topology.stop()
            throw error
        }
        defer {
            other.terminate()
            topology.stop()
        }
        let a = topology.service.port
        let b = other.port
        let user = UUID().uuidString.lowercased()

        // Baseline: turns nobody resumes.
        let quietBefore = try await Counters.read(ports: [a, b])
        for round in 0..<rounds {
            let body = try Self.body(user: user, thread: "quiet-\(round)")
            _ = try await RawStream.post(port: a, body: body, dropAfterChunks: nil)
        }
        let quiet = try await Counters.read(ports: [a, b]) - quietBefore

        var report: [String] = []
        for (mode, port) in [("same instance", a), ("other instance", b)] {
            let before = try await Counters.read(ports: [a, b])
            var latencies: [Double] = []
            var received: [(thread: String, text: String, done: Bool)] = []
            for round in 0..<rounds {
                let thread = "\(port)-\(round)"
                let dropped = try await RawStream.post(
                    port: a, body: try Self.body(user: user, thread: thread), dropAfterChunks: chunks)
                try await Task.sleep(for: .milliseconds(gapMs))
                let resumed = try await RawStream.get(
                    port: port, path: "/threads/\(thread)/stream?user_id=\(user)", lastEventID: dropped.lastID)
                if let first = resumed.firstChunkAfter { latencies.append(Double(first) / 1e6) }
                received.append((thread, dropped.text + resumed.text, resumed.done))
            }
            let spent = try await Counters.read(ports: [a, b]) - before
            var exact = 0
            for turn in received where turn.done {
                if try await Self.storedReply(port: a, user: user, thread: turn.thread) == turn.text { exact += 1 }
            }
            let sorted = latencies.sorted()
            func percentile(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
            report.append(
                String(
                    format: "%@: reconnect → first missed byte p50 %.2f ms, p90 %.2f ms, max %.2f ms; exact %d/%d",
                    mode, percentile(0.5), percentile(0.9), sorted.last ?? .nan, exact, rounds))
            let extraTrips = Double(spent.roundTrips - quiet.roundTrips) / Double(rounds)
            report.append(
                String(
                    format: "    database per resumed turn: %.1f round trips more than an unresumed turn (%.1f vs %.1f), NOTIFYs %@",
                    extraTrips, Double(spent.roundTrips) / Double(rounds), Double(quiet.roundTrips) / Double(rounds),
                    spent.notificationsPerTurn(rounds)))
        }
        for (mode, port) in [("same instance", a), ("other instance", b)] {
            var latencies: [Double] = []
            var stopped = 0
            for round in 0..<rounds {
                let thread = "stop-\(port)-\(round)"
                let (third, signal) = AsyncStream<Void>.makeStream()
                let body = try Self.body(user: user, thread: thread)
                let stream = Task {
                    try await RawStream.post(port: a, body: body, dropAfterChunks: nil) { count in
                        if count == 3 { signal.yield() }
                    }
                }
                for await _ in third { break }
                let sent = DispatchTime.now().uptimeNanoseconds
                try await RawStream.plain(port: port, method: "POST", path: "/threads/\(thread)/cancel?user_id=\(user)")
                let result = try await stream.value
                if let ended = result.endedAt { latencies.append(Double(Int64(ended) - Int64(sent)) / 1e6) }
                if result.stopReason == "cancelled" { stopped += 1 }
            }
            let sorted = latencies.sorted()
            func percentile(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
            report.append(
                String(
                    format: "stop from the %@: cancel sent → done on the stream p50 %.2f ms, p90 %.2f ms, max %.2f ms; cancelled %d/%d",
                    mode, percentile(0.5), percentile(0.9), sorted.last ?? .nan, stopped, rounds))
        }
        print("# agent-bench resume: \(rounds) turns per mode, 60 deltas 20 ms apart, dropped after \(chunks) chunks, resumed \(gapMs) ms later")
        print(
            String(
                format: "unresumed turns: %.1f round trips per turn, NOTIFYs %@", Double(quiet.roundTrips) / Double(rounds),
                quiet.notificationsPerTurn(rounds)))
        for line in report { print(line) }
    }

    static func body(user: String, thread: String) throws -> [UInt8] {
        Array(
            try JSONSerialization.data(withJSONObject: [
                "question": "Grüße 🌍 resume me", "user_id": user, "thread_id": thread, "user_timezone": "UTC",
            ]))
    }

    static func storedReply(port: Int, user: String, thread: String) async throws -> String? {
        let text = try await HTTPGet.text(port: port, path: "/threads/\(thread)/messages?user_id=\(user)")
        // The body is the one JSON object of the response (whatever its framing).
        guard let start = text.firstIndex(of: "{"), let end = text.lastIndex(of: "}"),
            let object = try? JSONSerialization.jsonObject(with: Data(text[start...end].utf8)) as? [String: Any],
            let messages = object["messages"] as? [[String: Any]]
        else { return nil }
        return messages.last?["content"] as? String
    }

    /// The services' database round trips and NOTIFYs, summed.
    struct Counters {
        var roundTrips = 0
        var notifications: [String: Int] = [:]

        static func read(ports: [Int]) async throws -> Counters {
            var counters = Counters()
            for port in ports {
                let text = try await HTTPGet.text(port: port, path: "/metrics")
                for line in text.split(separator: "\n") {
                    if line.hasPrefix("agent_db_round_trips_total ") {
                        counters.roundTrips += Int(line.split(separator: " ").last ?? "") ?? 0
                    } else if line.hasPrefix("agent_relay_notifications_total{"),
                        let kind = line.split(separator: "\"").dropFirst().first,
                        let value = line.split(separator: " ").last.flatMap({ Double($0) })
                    {
                        counters.notifications[String(kind), default: 0] += Int(value)
                    }
                }
            }
            return counters
        }

        static func - (lhs: Counters, rhs: Counters) -> Counters {
            var result = Counters(roundTrips: lhs.roundTrips - rhs.roundTrips)
            for (kind, value) in lhs.notifications { result.notifications[kind] = value - (rhs.notifications[kind] ?? 0) }
            return result
        }

        func notificationsPerTurn(_ turns: Int) -> String {
            let total = notifications.values.reduce(0, +)
            guard total > 0 else { return "0" }
            let kinds = notifications.sorted { $0.key < $1.key }.filter { $0.value > 0 }
                .map { String(format: "%@ %.1f", $0.key, Double($0.value) / Double(turns)) }
            return String(format: "%.1f (", Double(total) / Double(turns)) + kinds.joined(separator: ", ") + ")"
        }
    }
}

/// A blocking SSE client on a thread of its own, for one stream at a time.
enum RawStream {
    struct Result {
        var text = ""
        var lastID: String?
        var done = false
        /// Nanoseconds from the start of the connect to the first complete chunk frame.
        var firstChunkAfter: UInt64?
        /// When the final frame arrived (monotonic nanoseconds).
        var endedAt: UInt64?
        var stopReason: String?
        /// Every chunk, tool_call, tool_result, done and error frame, with its arrival (monotonic nanoseconds).
        var marks: [(kind: String, at: UInt64)] = []
    }

    static func post(
        port: Int, body: [UInt8], dropAfterChunks: Int?, onChunk: @escaping @Sendable (Int) -> Void = { _ in }
    ) async throws -> Result {
        let head =
            "POST /query_stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + "Accept: text/event-stream\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return try await run(
            port: port, request: Array(head.utf8) + body, stopAfterChunks: dropAfterChunks, onChunk: onChunk)
    }

    /// A request without a body whose whole response is read (e.g. `POST /threads/{id}/cancel`); returns when it ends.
    static func plain(port: Int, method: String, path: String) async throws {
        let head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        _ = try await run(port: port, request: Array(head.utf8), stopAfterChunks: nil, onChunk: { _ in })
    }

    static func get(port: Int, path: String, lastEventID: String?) async throws -> Result {
        var head = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        if let lastEventID { head += "Last-Event-ID: \(lastEventID)\r\n" }
        return try await run(port: port, request: Array((head + "\r\n").utf8), stopAfterChunks: nil, onChunk: { _ in })
    }

    private static func run(
        port: Int, request: [UInt8], stopAfterChunks: Int?, onChunk: @escaping @Sendable (Int) -> Void
    ) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Swift.Result { try blocking(port, request, stopAfterChunks, onChunk) })
            }.start()
        }
    }

    private static func blocking(
        _ port: Int, _ request: [UInt8], _ stopAfterChunks: Int?, _ onChunk: (Int) -> Void
    ) throws -> Result {
        let start = DispatchTime.now().uptimeNanoseconds
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw BenchmarkError("cannot connect to 127.0.0.1:\(port)") }
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var result = Result()
        var raw: [UInt8] = []
        var chunks = 0
        var buffer = [UInt8](repeating: 0, count: 16_384)
        var parsed = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            raw += buffer[0..<count]
            // Frames are found in the raw bytes (chunked framing lines never contain a blank SSE line of their own).
            while let end = find([10, 10], in: raw, from: parsed) {
                let block = String(decoding: raw[parsed..<end], as: UTF8.self)
                parsed = end + 2
                // By newline characters: the chunked framing's "\r\n" is one Character, never split on "\n".
                for line in block.split(whereSeparator: \.isNewline) {
                    if line.hasPrefix("id: ") { result.lastID = String(line.dropFirst(4)) }
                    guard line.hasPrefix("data: "),
                        let object = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any]
                    else { continue }
                    let arrival = DispatchTime.now().uptimeNanoseconds
                    for kind in ["chunk", "tool_call", "tool_result", "done", "error"] where object[kind] != nil {
                        result.marks.append((kind, arrival))
                    }
                    if let chunk = object["chunk"] as? String {
                        result.text += chunk
                        chunks += 1
                        if result.firstChunkAfter == nil { result.firstChunkAfter = DispatchTime.now().uptimeNanoseconds - start }
                        onChunk(chunks)
                    } else if object["done"] as? Bool == true {
                        result.done = true
                        result.endedAt = DispatchTime.now().uptimeNanoseconds
                        result.stopReason = object["stop_reason"] as? String
                    } else if object["error"] != nil {
                        result.endedAt = DispatchTime.now().uptimeNanoseconds
                    }
                }
                if let stopAfterChunks, chunks >= stopAfterChunks { return result }
            }
        }
        return result
    }

    private static func find(_ pattern: [UInt8], in bytes: [UInt8], from: Int) -> Int? {
        guard bytes.count >= pattern.count else { return nil }
        var index = from
        while index + pattern.count <= bytes.count {
            if bytes[index] == pattern[0], bytes[index + 1] == pattern[1] { return index }
            index += 1
        }
        return nil
    }
}
