import Foundation
import Logging

/// One configured MCP server: its session, its tools, and restarts after it dies.
///
/// Calls run concurrently on one session (the actor only guards the session slot; it is reentrant across the awaits).
/// When the session ends (the process exited, the HTTP session was lost), the call in flight gets
/// "the tool server exited" and the next call starts a new session, after a backoff that doubles from 0.5 s to 30 s
/// while restarts keep failing.
actor ToolServer {
    struct Tool: Sendable {
        /// The server's own name for it.
        let name: String
        let definition: ToolDefinition
    }

    let configuration: ServerConfiguration
    private let logger: Logger
    private var connection: MCPConnection?
    private var connecting: Task<MCPConnection, any Error>?
    private var consecutiveFailures = 0
    private var retryAfter: ContinuousClock.Instant?
    private(set) var tools: [Tool] = []
    private var closed = false

    init(configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    var name: String { configuration.name }

    /// Starting a server (spawn, `initialize`, `tools/list`) may take longer than a call: a Python server spends
    /// seconds importing its SDK on a busy machine. At least 30 s, or the call timeout when that is longer.
    nonisolated var startupTimeout: Duration { max(configuration.timeout, .seconds(30)) }

    /// Connects and lists the tools (filtered by the allowlist).
    /// - Throws: `MCPError` naming what failed, or `TimeoutError`.
    func start() async throws {
        let connection = try await connect()
        let listed = try await withTimeout(startupTimeout) { try await connection.listTools() }
        var tools: [Tool] = []
        for tool in listed {
            guard let name = tool.value["name"] as? String else { continue }
            if let allow = configuration.allow, !allow.contains(name) { continue }
            let qualified = ToolNames.qualified(server: configuration.name, tool: name)
            guard ToolNames.isValidForClaude(qualified) else {
                logger.warning(
                    "tool left out: its name is not valid for Claude",
                    metadata: ["server": "\(configuration.name)", "tool": "\(name)"])
                continue
            }
            let schema = tool.value["inputSchema"].flatMap(JSONText.encode) ?? #"{"type":"object"}"#
            tools.append(
                Tool(
                    name: name,
                    definition: ToolDefinition(
                        name: qualified, description: tool.value["description"] as? String ?? "", inputSchema: schema)))
        }
        for missing in configuration.allow ?? [] where !tools.contains(where: { $0.name == missing }) {
            logger.warning(
                "allowed tool not offered by the server",
                metadata: ["server": "\(configuration.name)", "tool": "\(missing)"])
        }
        self.tools = tools.sorted { $0.definition.name < $1.definition.name }
    }

    /// Calls one of the server's tools; every failure is an outcome.
    ///
    /// Whatever happens to the session, the call returns within the server's timeout (plus a moment to start it).
    func call(tool: String, arguments: String) async -> ToolOutcome {
        let connection: MCPConnection
        do {
            connection = try await liveConnection()
        } catch let error as MCPError {
            return .error("the tool server is not available: \(error.description)")
        } catch is CancellationError {
            return .error("the tool call was cancelled")
        } catch {
            return .error("the tool server is not available: \(error)")
        }
        let timeout = configuration.timeout
        do {
            let result = try await withTimeout(timeout) { try await connection.callTool(tool, arguments: arguments) }
            consecutiveFailures = 0
            return ToolResultText.outcome(result, maxBytes: configuration.maxOutputBytes)
        } catch is TimeoutError {
            return .error("the tool timed out after \(Self.seconds(timeout)) s")
        } catch is CancellationError {
            return .error("the tool call was cancelled")
        } catch let error as MCPError where error.kind == .closed {
            lost(connection, reason: error.description)
            return .error(
                "the tool server exited during the call (\(error.description)); it is restarted for the next call")
        } catch let error as MCPError {
            return .error(ToolResultText.truncate(error.description, maxBytes: configuration.maxOutputBytes))
        } catch {
            return .error("the tool call failed: \(error)")
        }
    }

    /// Ends the session (a stdio server is terminated), and refuses later calls.
    func shutdown() async {
        closed = true
        connecting?.cancel()
        let connection = self.connection
        self.connection = nil
        await connection?.close()
    }

    // MARK: - Session

    private func liveConnection() async throws -> MCPConnection {
        if let connection, !connection.isClosed { return connection }
        if let connection { lost(connection, reason: "the tool server exited") }
        if let retryAfter, ContinuousClock.now < retryAfter {
            let wait = retryAfter - ContinuousClock.now
            throw MCPError("it failed to restart; the next try is in \(Self.seconds(wait)) s")
        }
        return try await connect()
    }

    private func connect() async throws -> MCPConnection {
        guard !closed else { throw MCPError("the registry is shut down") }
        if let connecting { return try await connecting.value }
        let configuration = self.configuration
        let startupTimeout = self.startupTimeout
        let task = Task { () throws -> MCPConnection in
            let connection = MCPConnection(transport: MCPTransportFactory.make(configuration))
            do {
                try await withTimeout(startupTimeout) { try await connection.open() }
                return connection
            } catch {
                await connection.close()
                if error is TimeoutError {
                    throw MCPError("no answer to initialize within \(Self.seconds(startupTimeout)) s")
                }
                throw error
            }
        }
        connecting = task
        defer { connecting = nil }
        do {
            let connection = try await task.value
            if closed {
                await connection.close()
                throw MCPError("the registry is shut down")
            }
            self.connection = connection
            retryAfter = nil
            return connection
        } catch {
            consecutiveFailures += 1
            retryAfter = .now + Self.backoff(consecutiveFailures)
            throw error
        }
    }

    private func lost(_ lostConnection: MCPConnection, reason: String) {
        guard connection === lostConnection else { return }
        connection = nil
        // The first loss restarts at the next call; a server that keeps dying is restarted ever more slowly.
        consecutiveFailures += 1
        if consecutiveFailures > 1 { retryAfter = .now + Self.backoff(consecutiveFailures - 1) }
        logger.warning(
            "tool server session ended", metadata: ["server": "\(configuration.name)", "reason": "\(reason)"])
        // The transport has already terminated and reaped a stdio child; close() makes sure of it.
        Task { await lostConnection.close() }
    }

    static func backoff(_ failures: Int) -> Duration {
        .milliseconds(min(30_000, 500 << min(max(failures - 1, 0), 6)))
    }

    static func seconds(_ duration: Duration) -> String {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return seconds == seconds.rounded() ? "\(Int(seconds))" : String(format: "%.1f", seconds)
    }
}
