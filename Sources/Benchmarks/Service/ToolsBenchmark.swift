import ArgumentParser
import Dispatch
import Foundation

/// `agent-bench tools`: what one tool round adds to a turn, split into running the tool and asking Claude again.
struct ToolsBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tools",
        abstract: "Compare plain turns with turns that make one tool call (search_memory, an MCP server over stdio); print the added latency.",
        discussion: """
            Starts the release service on a throwaway Postgres and the stub (5 deltas, no pacing, so the upstream \
            costs next to nothing and what is measured is the service). Plain turns ask a question; tool turns use \
            the stub's `[[stub:tool NAME {…}]]` directive, so the first step says "Calling NAME." and calls the tool, \
            and the continuation answers with the tool's result. For each kind: the whole turn (request sent to done \
            received), and for tool turns tool_call → tool_result (the call itself, as the client sees it) and \
            tool_result → the continuation's first chunk (the second upstream request: history rebuilt, sent, first \
            delta relayed). The MCP kind needs the test virtualenv (scripts/ensure-mcp-venv.sh); without it, it is \
            skipped.
            """
    )

    @Option(help: "Turns per kind.")
    var rounds = 100

    @Option(help: "The agent-service binary.")
    var binary = ".build/release/agent-service"

    @Option(help: "Python of the MCP virtualenv (for the MCP kind).")
    var python = ".build/mcp-venv/bin/python"

    @Option(help: "The MCP server script (stdio) whose echo tool is called.")
    var mcpServer = "Tests/ToolsTests/Fixtures/trouble_server.py"

    func run() async throws {
        let files = FileManager.default
        let cwd = files.currentDirectoryPath
        func absolute(_ path: String) -> String { path.hasPrefix("/") ? path : cwd + "/" + path }
        var environment: [String: String] = [:]
        var config: String?
        let hasMCP = files.isExecutableFile(atPath: absolute(python)) && files.fileExists(atPath: absolute(mcpServer))
        if hasMCP {
            let path = files.temporaryDirectory.appendingPathComponent("bench-tools-\(UUID().uuidString).json").path
            let json: [String: Any] = [
                "servers": ["trouble": ["command": absolute(python), "args": [absolute(mcpServer)], "timeout_seconds": 30]]
            ]
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            environment["TOOLS_CONFIG"] = path
            config = path
        }
        defer { if let config { try? files.removeItem(atPath: config) } }
        let topology = try await BenchTopology.start(
            binary: binary, benchBinary: CommandLine.arguments[0],
            stubArguments: ["--deltas", "5", "--interval-ms", "0", "--first-ms", "0"], environment: environment)
        defer { topology.stop() }
        let port = topology.service.port
        let user = UUID().uuidString.lowercased()

        var kinds: [(name: String, directive: String?)] = [
            ("plain", nil), ("search_memory (built in, one Postgres query)", #"search_memory {"query":"bench question"}"#),
        ]
        if hasMCP { kinds.append(("MCP over stdio (Python SDK echo)", #"trouble__echo {"text":"bench"}"#)) }

        // Warm-up: connections, plans, the MCP session.
        for (index, kind) in kinds.enumerated() {
            for round in 0..<5 {
                _ = try await Self.turn(port: port, user: user, thread: "warm-\(index)-\(round)", directive: kind.directive)
            }
        }
        print("# agent-bench tools: \(rounds) turns per kind, one at a time; stub 5 deltas, no pacing")
        var plainP50 = Double.nan
        for (index, kind) in kinds.enumerated() {
            var totals: [Double] = []
            var calls: [Double] = []
            var continuations: [Double] = []
            var completed = 0
            for round in 0..<rounds {
                let sent = DispatchTime.now().uptimeNanoseconds
                let result = try await Self.turn(port: port, user: user, thread: "t-\(index)-\(round)", directive: kind.directive)
                guard result.done, let ended = result.endedAt else { continue }
                completed += 1
                totals.append(Double(ended - sent) / 1e6)
                guard kind.directive != nil else { continue }
                let marks = result.marks
                guard let call = marks.first(where: { $0.kind == "tool_call" }),
                    let answer = marks.first(where: { $0.kind == "tool_result" }),
                    let next = marks.first(where: { $0.kind == "chunk" && $0.at >= answer.at })
                else { continue }
                calls.append(Double(answer.at - call.at) / 1e6)
                continuations.append(Double(next.at - answer.at) / 1e6)
            }
            let total = Percentiles(totals)
            var line = String(
                format: "%@: turn p50 %.2f ms, p95 %.2f ms; completed %d/%d", kind.name, total.p50, total.p95, completed,
                rounds)
            if kind.directive == nil {
                plainP50 = total.p50
            } else {
                let call = Percentiles(calls)
                let continuation = Percentiles(continuations)
                line += String(
                    format:
                        "\n    added to the turn p50 %.2f ms; tool_call → tool_result p50 %.2f ms, p95 %.2f ms; tool_result → next chunk p50 %.2f ms, p95 %.2f ms",
                    total.p50 - plainP50, call.p50, call.p95, continuation.p50, continuation.p95)
            }
            print(line)
        }
        if !hasMCP { print("(MCP kind skipped: no \(python); run scripts/ensure-mcp-venv.sh)") }
    }

    static func turn(port: Int, user: String, thread: String, directive: String?) async throws -> RawStream.Result {
        let question = directive.map { "[[stub:tool \($0)]] bench question" } ?? "bench question"
        let body = Array(
            try JSONSerialization.data(withJSONObject: [
                "question": question, "user_id": user, "thread_id": thread, "user_timezone": "UTC",
            ]))
        return try await RawStream.post(port: port, body: body, dropAfterChunks: nil)
    }

    struct Percentiles {
        let p50: Double
        let p95: Double
        init(_ values: [Double]) {
            let sorted = values.sorted()
            func at(_ p: Double) -> Double { sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
            p50 = at(0.5)
            p95 = at(0.95)
        }
    }
}
