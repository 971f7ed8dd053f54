import ClaudeStub
import Foundation
import Synchronization
import TestSupport
import Testing
import ThreadStore

#if canImport(Glibc)
    import Glibc
#endif

@testable import AgentService

/// A bare TCP connection for sending partial requests.
private final class RawConnection: Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = try TestHTTP.connectedSocket(port: port)
    }

    deinit { close(fd) }

    func send(_ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the server closes the connection or `timeout` passes; returns what arrived and whether it closed.
    func readUntilClosed(timeout: Duration) async -> (text: String, closed: Bool) {
        let fd = self.fd
        return await withCheckedContinuation { continuation in
            Thread {
                var timeval = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeval, socklen_t(MemoryLayout<timeval>.size))
                var received: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                var closed = false
                while true {
                    let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    if count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                        closed = true
                        break
                    }
                    if count < 0 { break }  // timed out, still open
                    received += buffer[0..<count]
                }
                continuation.resume(returning: (String(decoding: received, as: UTF8.self), closed))
            }.start()
        }
    }
}

@Suite("Hardening: slow and idle clients, and a cap on connections", .timeLimit(.minutes(3)))
struct SlowClientTests {
    @Test("a request head that never completes, a trickled body and an idle keep-alive connection are all closed")
    func readDeadlines() async throws {
        try await ServiceHarness.run(configure: { $0.requestReadTimeoutSeconds = 2 }) { service in
            let halfHead = try RawConnection(port: service.port)
            halfHead.send("GET /health HTTP/1.1\r\nHost: x\r\n")
            let trickle = try RawConnection(port: service.port)
            trickle.send(
                "POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"question\"")
            let idle = try RawConnection(port: service.port)
            idle.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")

            let started = ContinuousClock.now
            let (headText, headClosed) = await halfHead.readUntilClosed(timeout: .seconds(8))
            #expect(headClosed, "a half-sent head is dropped")
            #expect(headText.isEmpty || headText.hasPrefix("HTTP/1.1 408"))
            let (trickleText, trickleClosed) = await trickle.readUntilClosed(timeout: .seconds(8))
            // Normally a 408 naming the problem; on a machine too loaded to start the handler in time, the idle
            // deadline closes the connection first. Either way it is not held.
            #expect(trickleText.isEmpty || (trickleText.hasPrefix("HTTP/1.1 408") && trickleText.contains("request_timeout")), "\(trickleText)")
            #expect(trickleClosed)
            let (idleText, idleClosed) = await idle.readUntilClosed(timeout: .seconds(8))
            #expect(idleText.hasPrefix("HTTP/1.1 200"), "the request itself was answered")
            #expect(idleClosed, "then the idle keep-alive connection was closed")
            #expect(ContinuousClock.now - started < .seconds(8))
            #expect(try await service.repository.listThreads(userID: UUID(), limit: 1, before: nil).isEmpty)
        }
    }

    @Test("past MAX_CONNECTIONS new connections wait instead of failing; running streams and /health keep working")
    func connectionCap() async throws {
        try await ServiceHarness.run(
            stub: StubConfiguration(deltaInterval: .milliseconds(100), deltaCount: 40),
            configure: {
                $0.maxConnections = 8
                // The flood is held for 4 + 2 s: time for a loaded machine to accept all of it before the check.
                $0.requestReadTimeoutSeconds = 4
            }
        ) { service in
            let stream = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("keep streaming", user: UUID(), thread: "t"))
            #expect(stream.status == 200)
            // A flood of connections that send nothing useful takes every other slot.
            var flood: [RawConnection] = []
            for _ in 0..<7 {
                let connection = try RawConnection(port: service.port)
                connection.send("GET /heal")
                flood.append(connection)
            }
            // Let the server accept every flood connection (under load it may take a while) before the probe.
            try await Task.sleep(for: .milliseconds(1_200))
            let port = service.port
            let answered = Mutex(false)
            let health = Task {
                let response = try await TestHTTP.request(port: port, method: "GET", path: "/health")
                answered.withLock { $0 = true }
                return response
            }
            try await Task.sleep(for: .milliseconds(800))
            let early = answered.withLock { $0 }
            #expect(!early, "the new connection waits while the cap is reached")
            // The flood is dropped by the read deadline; the waiting request is then served.
            let response = try await health.value
            #expect(response.status == 200)
            let events = await stream.all()
            #expect(events.last?.isDone == true, "the running stream was never disturbed")
            #expect((events.last?.json["usage"] as? [String: Any])?["output_tokens"] as? Int == 40)
            #expect(!events.compactMap(\.chunk).isEmpty)
            _ = flood
        }
    }
}
