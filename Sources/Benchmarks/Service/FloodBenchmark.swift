import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `agent-bench flood`: what a flood of idle and half-sent connections costs the service, and whether it stays
/// healthy meanwhile.
struct FloodBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flood",
        abstract: "Open N connections that send half a request head and nothing more; report what the service holds.",
        discussion: """
            Starts the release binary against a throwaway Postgres and the stub, opens --connections raw TCP \
            connections that each send an unfinished request head, and while they are open measures /health \
            (one new connection every 100 ms), the service's RSS and open descriptors, and how long it takes the \
            service to drop the flood (REQUEST_READ_TIMEOUT_SECONDS).
            """
    )

    @Option(help: "Connections in the flood.")
    var connections = 2_000

    @Option(help: "MAX_CONNECTIONS of the service (the flood may exceed it; excess connections wait in the backlog).")
    var maxConnections = 4_096

    @Option(help: "REQUEST_READ_TIMEOUT_SECONDS of the service.")
    var readTimeout = 10

    @Option(help: "The agent-service binary.")
    var binary = ".build/release/agent-service"

    func run() async throws {
        _ = raiseFileDescriptorLimit(to: rlim_t(connections * 2 + 1_000))
        let topology = try await BenchTopology.start(
            binary: binary, benchBinary: CommandLine.arguments[0],
            environment: ["MAX_CONNECTIONS": "\(maxConnections)", "REQUEST_READ_TIMEOUT_SECONDS": "\(readTimeout)"])
        defer { topology.stop() }
        let service = topology.service
        let stats = ProcessStats(pid: service.pid)
        let idleHealth = try await Self.healthLatencies(port: service.port, count: 20)
        let rssBefore = stats.currentRSS()
        let fdsBefore = Self.openDescriptors(service.pid)

        let opened = Date()
        var sockets: [Int32] = []
        for _ in 0..<connections {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(service.port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if result != 0 {
                close(fd)
                continue
            }
            let head = Array("GET /health HTTP/1.1\r\nHost: flood\r\nX-Slow: ".utf8)
            _ = head.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            sockets.append(fd)
        }
        try await Task.sleep(for: .seconds(1))
        let rssDuring = stats.currentRSS()
        let fdsDuring = Self.openDescriptors(service.pid)
        let duringHealth = try await Self.healthLatencies(port: service.port, count: 20)

        // How long until the service has dropped them all.
        var dropped = 0
        var lastDrop = Date()
        while dropped < sockets.count, Date().timeIntervalSince(opened) < Double(readTimeout * 3 + 10) {
            dropped = sockets.filter(Self.isClosedByPeer).count
            lastDrop = Date()
            if dropped < sockets.count { try await Task.sleep(for: .milliseconds(200)) }
        }
        let fdsAfter = Self.openDescriptors(service.pid)
        for fd in sockets { close(fd) }

        func ms(_ values: [Double]) -> String {
            let sorted = values.sorted()
            return String(
                format: "p50 %.1f ms, p99 %.1f ms, max %.1f ms", sorted[sorted.count / 2],
                sorted[min(sorted.count - 1, sorted.count * 99 / 100)], sorted.last ?? 0)
        }
        print("# agent-bench flood: \(sockets.count) of \(connections) connections opened, each with half a request head")
        print("#   MAX_CONNECTIONS \(maxConnections), REQUEST_READ_TIMEOUT_SECONDS \(readTimeout)")
        print("/health before the flood:  \(ms(idleHealth))")
        print("/health during the flood:  \(ms(duringHealth))")
        print(
            "service RSS: \(rssBefore >> 20) MiB before, \(rssDuring >> 20) MiB during (\(String(format: "%.1f", Double(rssDuring - rssBefore) / Double(max(1, sockets.count)) / 1024)) KiB per held connection)"
        )
        print("service open descriptors: \(fdsBefore) before, \(fdsDuring) during, \(fdsAfter) after")
        print(
            "flood connections dropped by the service: \(dropped) of \(sockets.count), the last after \(String(format: "%.1f", lastDrop.timeIntervalSince(opened))) s"
        )
    }

    static func healthLatencies(port: Int, count: Int) async throws -> [Double] {
        var samples: [Double] = []
        for _ in 0..<count {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try await HTTPGet.text(port: port, path: "/health")
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            try await Task.sleep(for: .milliseconds(100))
        }
        return samples
    }

    static func openDescriptors(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// True when the peer closed the connection (a non-blocking read returns 0).
    static func isClosedByPeer(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let count = recv(fd, &byte, 1, Int32(MSG_DONTWAIT) | Int32(MSG_PEEK))
        return count == 0 || (count < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }
}
