import ArgumentParser
import Claude
import ClaudeStub
import Dispatch
import Foundation
import Logging

/// `agent-bench claude`: the delay the Claude client adds between a text delta leaving the stub and the event
/// reaching the consumer, over N concurrent streams, plus process CPU time per 1,000 events.
///
/// The stub and the client share this process, so CPU figures include the stub's work.
struct ClaudeBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "claude",
        abstract: "Stub → ClaudeClient delta latency and CPU per 1,000 events over N concurrent streams."
    )

    @Option(help: "Concurrent streams.")
    var streams: Int = 100

    @Option(help: "Text deltas per stream.")
    var deltas: Int = 50

    @Option(name: .customLong("interval-ms"), help: "Milliseconds between deltas.")
    var intervalMs: Int = 10

    func run() async throws {
        let stub = ClaudeStub(
            configuration: .init(deltaInterval: .milliseconds(intervalMs), deltaCount: deltas, embedTimestamps: true)
        )
        try await stub.start()
        let http = HTTPClient()
        var logger = Logger(label: "claude-bench")
        logger.logLevel = .warning
        let client = ClaudeClient(
            configuration: .init(apiKey: "bench", baseURL: stub.baseURL), httpClient: http, logger: logger
        )
        let request = MessagesRequest(
            model: "claude-bench", maxTokens: 1024,
            messages: [MessageParam(role: .user, text: "benchmark the relay of streamed deltas")]
        )
        let deltas = self.deltas
        let streams = self.streams

        let cpuBefore = Self.cpuSeconds()
        let wallStart = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: ([UInt64], Int, Bool).self) { group in
            for _ in 0..<streams {
                group.addTask {
                    var delays: [UInt64] = []
                    delays.reserveCapacity(deltas)
                    var events = 0
                    var stopped = false
                    for try await event in client.stream(request) {
                        events += 1
                        switch event {
                        case .textDelta(_, let text):
                            let now = DispatchTime.now().uptimeNanoseconds
                            if let sent = Self.timestamp(in: text), now >= sent { delays.append(now - sent) }
                        case .messageStop:
                            stopped = true
                        default:
                            break
                        }
                    }
                    return (delays, events, stopped)
                }
            }
            var all: [([UInt64], Int, Bool)] = []
            for try await result in group { all.append(result) }
            return all
        }
        let wall = ContinuousClock.now - wallStart
        let cpu = Self.cpuSeconds() - cpuBefore
        http.shutdown()
        await stub.stop()

        var delays = results.flatMap(\.0)
        delays.sort()
        let events = results.reduce(0) { $0 + $1.1 }
        let completed = results.filter(\.2).count
        func percentile(_ p: Double) -> Double {
            guard !delays.isEmpty else { return 0 }
            let index = min(delays.count - 1, Int((Double(delays.count) * p).rounded(.up)) - 1)
            return Double(delays[max(0, index)]) / 1000
        }
        let maxDelay = delays.last.map { Double($0) / 1000 } ?? 0
        let cpuPerThousand = events > 0 ? cpu * 1_000_000 / Double(events) : 0
        print("claude: streams=\(streams) deltas=\(deltas) interval=\(intervalMs)ms (stub and client in one process)")
        print("  completed streams: \(completed)/\(streams), text deltas timed: \(delays.count), events: \(events)")
        print(
            String(
                format: "  added delay stub-send -> consumer (µs): p50 %.0f  p99 %.0f  max %.0f", percentile(0.5),
                percentile(0.99), maxDelay))
        print(
            String(
                format: "  wall %.3f s, CPU %.3f s (user+sys), CPU per 1,000 events %.2f ms", Self.seconds(wall), cpu,
                cpuPerThousand))
    }

    /// The `[ts:…]` send stamp of a delta (the first delta also carries `[rx:…]` before it).
    static func timestamp(in text: String) -> UInt64? {
        guard let start = text.range(of: "[ts:"), let end = text[start.upperBound...].firstIndex(of: "]") else {
            return nil
        }
        return UInt64(text[start.upperBound..<end])
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        #if os(Linux)
            getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
            getrusage(RUSAGE_SELF, &usage)
        #endif
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
            + Double(usage.ru_stime.tv_usec) / 1e6
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
