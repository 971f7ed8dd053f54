import Foundation
import Testing
import Tools

@Suite(
    "MCP over Streamable HTTP: the official Python SDK's server on a loopback port", .timeLimit(.minutes(3)),
    .serialized)
struct HTTPToolTests {
    let user = UUID()

    private func server(_ url: URL, timeoutSeconds: Int = 30, maxOutputBytes: Int = 100_000) -> ServerConfiguration {
        ServerConfiguration(
            name: "remote", transport: .http(url: url, headers: ["X-Test": "1"]), timeout: .seconds(timeoutSeconds),
            maxOutputBytes: maxOutputBytes)
    }

    @Test("tools are listed and called over a session (SSE-framed responses)")
    func listsAndCalls() async throws {
        try await MCPFixtures.withHTTPTrouble { url in
            try await MCPFixtures.withRegistry([server(url)]) { registry in
                #expect(registry.definitions.map(\.name).contains("remote__echo"))
                let echo = await registry.call(name: "remote__echo", input: #"{"text":"über HTTP ✓"}"#, user: user)
                #expect(echo == ToolOutcome(text: "über HTTP ✓", isError: false))
                let fail = await registry.call(name: "remote__fail", input: "{}", user: user)
                #expect(fail.isError)
                let unknown = await registry.call(name: "remote__nope", input: "{}", user: user)
                #expect(unknown.isError)
                let invalid = await registry.call(name: "remote__echo", input: "[]", user: user)
                #expect(invalid.isError)
            }
        }
    }

    @Test("a hung call times out, a 10 MB result is capped, concurrent calls each get their answer")
    func failureModes() async throws {
        try await MCPFixtures.withHTTPTrouble { url in
            let user = self.user
            try await MCPFixtures.withRegistry([server(url, timeoutSeconds: 3)]) { registry in
                let slow = await registry.call(name: "remote__sleep", input: #"{"seconds":120}"#, user: user)
                #expect(slow == ToolOutcome(text: "the tool timed out after 3 s", isError: true))
            }
            // Making 10 MB takes the server a while on a loaded machine: a generous timeout here.
            try await MCPFixtures.withRegistry([server(url, timeoutSeconds: 120, maxOutputBytes: 20_000)]) { registry in
                let big = await registry.call(name: "remote__big", input: #"{"megabytes":10}"#, user: user)
                #expect(!big.isError, "\(big.text.prefix(200))")
                #expect(big.text.utf8.count <= 20_000)
                #expect(big.text.contains("[output truncated: 10485760 bytes"))
                let answers = await withTaskGroup(of: ToolOutcome.self) { group in
                    for index in 0..<6 {
                        group.addTask {
                            await registry.call(name: "remote__echo", input: #"{"text":"\#(index)"}"#, user: user)
                        }
                    }
                    var texts: [String] = []
                    for await outcome in group { texts.append(outcome.text) }
                    return texts.sorted()
                }
                #expect(answers == ["0", "1", "2", "3", "4", "5"])
            }
        }
    }

    @Test("a server that is not there fails start-up naming it")
    func unreachable() async throws {
        let port = try FreePortForTests.closed()
        do {
            _ = try await MCPFixtures.registry([
                server(URL(string: "http://127.0.0.1:\(port)/mcp")!, timeoutSeconds: 10)
            ])
            Issue.record("start-up succeeded")
        } catch {
            #expect("\(error)".hasPrefix("TOOLS_CONFIG: server 'remote' failed to start: "), "\(error)")
        }
    }
}

import TestSupport

enum FreePortForTests {
    /// A loopback port nothing listens on (picked, then released).
    static func closed() throws -> Int { try FreePort.pick() }
}
