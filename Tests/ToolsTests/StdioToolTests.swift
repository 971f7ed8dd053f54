import Foundation
import Testing
import Tools

@Suite("MCP over stdio: real servers from the official Python SDK", .timeLimit(.minutes(3)), .serialized)
struct StdioToolTests {
    let user = UUID()

    @Test("the reference time server's tools are listed, named <server>__<tool>, and answer")
    func referenceTimeServer() async throws {
        let time = ServerConfiguration(
            name: "time",
            transport: .stdio(
                command: MCPFixtures.timeServer, arguments: ["--local-timezone", "UTC"], environment: [:]))
        try await MCPFixtures.withRegistry([time]) { registry in
            let names = registry.definitions.map(\.name)
            #expect(names.contains("time__get_current_time"))
            #expect(names.contains("time__convert_time"))
            let definition = try #require(registry.definitions.first { $0.name == "time__get_current_time" })
            #expect(!definition.description.isEmpty)
            let schema = try JSONSerialization.jsonObject(with: Data(definition.inputSchema.utf8)) as? [String: Any]
            #expect(schema?["type"] as? String == "object")
            #expect(definition.messagesAPIJSON.hasPrefix(#"{"name":"time__get_current_time","description":"#))

            let outcome = await registry.call(
                name: "time__get_current_time", input: #"{"timezone":"Europe/Berlin"}"#, user: user)
            #expect(!outcome.isError, "\(outcome.text)")
            #expect(outcome.text.contains("Europe/Berlin"))
            let bad = await registry.call(
                name: "time__get_current_time", input: #"{"timezone":"Mars/Base"}"#, user: user)
            #expect(bad.isError)
        }
    }

    @Test("the allowlist keeps only the named tools")
    func allowlist() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble(allow: ["echo", "pid"])]) { registry in
            #expect(registry.definitions.map(\.name) == ["trouble__echo", "trouble__pid"])
            let hidden = await registry.call(name: "trouble__fail", input: "{}", user: user)
            #expect(hidden.isError)
            #expect(hidden.text.hasPrefix("unknown tool"))
        }
    }

    @Test("a tool that fails is an error outcome with the server's message")
    func failingTool() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble()]) { registry in
            let outcome = await registry.call(name: "trouble__fail", input: #"{"reason":"disk full"}"#, user: user)
            #expect(outcome.isError)
            #expect(outcome.text.contains("fail"))
            // The server is fine afterwards.
            let echo = await registry.call(name: "trouble__echo", input: #"{"text":"still here"}"#, user: user)
            #expect(echo == ToolOutcome(text: "still here", isError: false))
        }
    }

    @Test("a tool that hangs times out after the server's timeout, is cancelled, and the server keeps serving")
    func hungToolTimesOut() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble(timeoutSeconds: 2)]) { registry in
            let started = ContinuousClock.now
            let outcome = await registry.call(name: "trouble__sleep", input: #"{"seconds":120}"#, user: user)
            #expect(outcome.isError)
            #expect(outcome.text == "the tool timed out after 2 s")
            #expect(ContinuousClock.now - started < .seconds(60))
            let echo = await registry.call(name: "trouble__echo", input: #"{"text":"after"}"#, user: user)
            #expect(echo.text == "after")
        }
    }

    @Test("a 10 MB result is cut to max_output_bytes at a character boundary, with a marker")
    func hugeOutputIsCapped() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble(maxOutputBytes: 50_000)]) { registry in
            let outcome = await registry.call(name: "trouble__big", input: #"{"megabytes":10}"#, user: user)
            #expect(!outcome.isError)
            #expect(outcome.text.utf8.count <= 50_000)
            #expect(outcome.text.utf8.count > 49_000)
            #expect(outcome.text.hasSuffix("shown]"))
            #expect(outcome.text.contains("[output truncated: 10485760 bytes"))
        }
    }

    @Test("one JSON-RPC message over the 16 MiB ceiling ends that session cleanly; the next call gets a new one")
    func messageOverTheCeiling() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble()]) { registry in
            let before = try #require(Int32(await registry.call(name: "trouble__pid", input: "{}", user: user).text))
            let outcome = await registry.call(name: "trouble__big", input: #"{"megabytes":20}"#, user: user)
            #expect(outcome.isError)
            #expect(outcome.text.contains("larger than 16777216 bytes"))
            #expect(!MCPFixtures.processExists(before))
            let echo = await registry.call(name: "trouble__echo", input: #"{"text":"fresh"}"#, user: user)
            #expect(echo == ToolOutcome(text: "fresh", isError: false))
        }
    }

    @Test("an unknown tool name and input that is not a JSON object are error outcomes")
    func unknownToolAndInvalidInput() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble()]) { registry in
            let unknown = await registry.call(name: "trouble__nope", input: "{}", user: user)
            #expect(unknown.isError)
            #expect(unknown.text.hasPrefix("unknown tool 'trouble__nope'"))
            for input in ["", "not json", "[1,2]", "\"text\"", "42", "{\"text\": ", "null"] {
                let outcome = await registry.call(name: "trouble__echo", input: input, user: user)
                #expect(outcome == ToolOutcome(text: "the tool input is not a JSON object", isError: true), "\(input)")
            }
            // Input of the wrong shape reaches the server, which says so.
            let wrong = await registry.call(name: "trouble__echo", input: #"{"text": 5}"#, user: user)
            #expect(wrong.isError)
        }
    }

    @Test("a server that crashes mid-call gives 'the tool server exited', and a new one serves the next call")
    func crashMidCall() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble()]) { registry in
            let before = await registry.call(name: "trouble__pid", input: "{}", user: user)
            let firstPID = try #require(Int32(before.text))
            let crash = await registry.call(name: "trouble__crash", input: "{}", user: user)
            #expect(crash.isError)
            #expect(crash.text.hasPrefix("the tool server exited"))
            #expect(!MCPFixtures.processExists(firstPID))
            let after = await registry.call(name: "trouble__pid", input: "{}", user: user)
            #expect(!after.isError, "\(after.text)")
            let secondPID = try #require(Int32(after.text))
            #expect(secondPID != firstPID)
        }
    }

    @Test("concurrent calls to one server are multiplexed, each getting its own answer")
    func concurrentCalls() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble()]) { registry in
            let user = self.user
            let answers = await withTaskGroup(of: (Int, ToolOutcome).self) { group in
                for index in 0..<12 {
                    group.addTask {
                        let input = index % 3 == 0 ? #"{"seconds":0.5}"# : #"{"text":"call \#(index)"}"#
                        let name = index % 3 == 0 ? "trouble__sleep" : "trouble__echo"
                        return (index, await registry.call(name: name, input: input, user: user))
                    }
                }
                var answers: [Int: ToolOutcome] = [:]
                for await (index, outcome) in group { answers[index] = outcome }
                return answers
            }
            for index in 0..<12 {
                let expected = index % 3 == 0 ? "slept 0.5" : "call \(index)"
                #expect(answers[index] == ToolOutcome(text: expected, isError: false))
            }
        }
    }

    @Test("cancelling the calling task ends a hung call promptly")
    func cancellation() async throws {
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble(timeoutSeconds: 600)]) { registry in
            let user = self.user
            let started = ContinuousClock.now
            let call = Task { await registry.call(name: "trouble__sleep", input: #"{"seconds":300}"#, user: user) }
            try await Task.sleep(for: .milliseconds(500))
            call.cancel()
            let outcome = await call.value
            #expect(outcome.isError)
            #expect(outcome.text.contains("cancelled"))
            #expect(ContinuousClock.now - started < .seconds(60))
            let echo = await registry.call(name: "trouble__echo", input: #"{"text":"ok"}"#, user: user)
            #expect(echo.text == "ok")
        }
    }

    @Test("shutdown leaves no server process behind")
    func shutdownTerminates() async throws {
        let registry = try await MCPFixtures.registry([MCPFixtures.stdioTrouble()])
        let pid = try #require(Int32(await registry.call(name: "trouble__pid", input: "{}", user: user).text))
        #expect(MCPFixtures.processExists(pid))
        await registry.shutdown()
        #expect(!MCPFixtures.processExists(pid))
        let late = await registry.call(name: "trouble__pid", input: "{}", user: user)
        #expect(late.isError)
    }

    @Test("a server that cannot start fails start-up with one line naming it")
    func startupFailure() async throws {
        let broken = ServerConfiguration(
            name: "broken", transport: .stdio(command: "/nonexistent/mcp-server", arguments: [], environment: [:]))
        let exits = ServerConfiguration(
            name: "exits", transport: .stdio(command: "/bin/sh", arguments: ["-c", "exit 3"], environment: [:]),
            timeout: .seconds(20))
        for server in [broken, exits] {
            do {
                _ = try await MCPFixtures.registry([MCPFixtures.stdioTrouble(), server])
                Issue.record("start-up succeeded with \(server.name)")
            } catch {
                let message = "\(error)"
                #expect(message.hasPrefix("TOOLS_CONFIG: server '\(server.name)' failed to start: "), "\(message)")
                #expect(!message.contains("\n"))
            }
        }
    }

    @Test("built-in tools are offered next to MCP tools and get the verified user")
    func builtinTools() async throws {
        struct WhoAmI: BuiltinTool {
            let definition = ToolDefinition(
                name: "who_am_i", description: "The user.", inputSchema: #"{"type":"object"}"#)
            func call(input: String, context: ToolCallContext) async -> ToolOutcome {
                ToolOutcome(text: "\(context.userID) in \(context.threadID ?? "-")", isError: false)
            }
        }
        try await MCPFixtures.withRegistry([MCPFixtures.stdioTrouble(allow: ["echo"])], builtins: [WhoAmI()]) {
            registry in
            #expect(registry.definitions.map(\.name) == ["trouble__echo", "who_am_i"])
            let outcome = await registry.call(
                name: "who_am_i", input: "{}", context: ToolCallContext(userID: user, threadID: "t1"))
            #expect(outcome.text == "\(user) in t1")
        }
    }
}
