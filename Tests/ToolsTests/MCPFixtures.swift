import Foundation
import Logging
import TestSupport
import Tools

#if canImport(Glibc)
    import Glibc
#endif

/// Paths and servers for the Tools tests: real MCP servers from PyPI in `.build/mcp-venv`
/// (`scripts/ensure-mcp-venv.sh` creates it).
enum MCPFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let venv = root.appendingPathComponent(".build/mcp-venv/bin")
    static let python = venv.appendingPathComponent("python").path
    static let timeServer = venv.appendingPathComponent("mcp-server-time").path
    static let troubleServer = root.appendingPathComponent("Tests/ToolsTests/Fixtures/trouble_server.py").path

    static var logger: Logger {
        var logger = Logger(label: "tools-tests")
        logger.logLevel = .warning
        return logger
    }

    static func requireVenv() throws {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw SpawnError("no MCP virtualenv at \(venv.path): run scripts/ensure-mcp-venv.sh")
        }
    }

    /// The trouble server over stdio.
    static func stdioTrouble(timeoutSeconds: Int = 30, maxOutputBytes: Int = 100_000, allow: [String]? = nil)
        -> ServerConfiguration
    {
        ServerConfiguration(
            name: "trouble", transport: .stdio(command: python, arguments: [troubleServer], environment: [:]),
            allow: allow, timeout: .seconds(timeoutSeconds), maxOutputBytes: maxOutputBytes)
    }

    static func registry(_ servers: [ServerConfiguration], builtins: [any BuiltinTool] = []) async throws
        -> ToolRegistry
    {
        try requireVenv()
        return try await ToolRegistry.start(
            configuration: ToolsConfiguration(servers: servers), builtins: builtins, logger: logger)
    }

    /// Runs `body` with a registry, shutting it down afterwards whatever happens.
    static func withRegistry<T>(
        _ servers: [ServerConfiguration], builtins: [any BuiltinTool] = [], _ body: (ToolRegistry) async throws -> T
    ) async throws -> T {
        let registry = try await registry(servers, builtins: builtins)
        do {
            let value = try await body(registry)
            await registry.shutdown()
            return value
        } catch {
            await registry.shutdown()
            throw error
        }
    }

    /// The trouble server serving Streamable HTTP on a free loopback port, until `body` returns.
    static func withHTTPTrouble<T>(_ body: (URL) async throws -> T) async throws -> T {
        try requireVenv()
        let port = try FreePort.pick()
        let process = try SpawnedProcess(
            executable: python, arguments: [troubleServer, "http", "\(port)"],
            environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"])
        func stop() async {
            process.terminate()
            for _ in 0..<50 where process.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
            process.send(SIGKILL)
            _ = try? await process.waitForExit()
        }
        do {
            let deadline = ContinuousClock.now + .seconds(60)
            while !FreePort.isAccepting(port) {
                guard process.isRunning, ContinuousClock.now < deadline else {
                    throw SpawnError("the HTTP MCP server did not start on port \(port)")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            let value = try await body(URL(string: "http://127.0.0.1:\(port)/mcp")!)
            await stop()
            return value
        } catch {
            await stop()
            throw error
        }
    }

    /// Whether a process with this id exists (and is not a zombie).
    static func processExists(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let status = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !status.contains(") Z ")
    }
}
