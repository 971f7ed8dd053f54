public import Foundation
public import Logging

/// The tools a turn may offer Claude: every configured MCP server's (allowlisted) tools plus built-in ones.
///
/// ```swift
/// let registry = try await ToolRegistry.start(configuration: config, builtins: [memory], logger: logger)
/// request.tools = registry.definitions                      // for the Messages API's "tools"
/// let outcome = await registry.call(name: use.name, input: use.inputJSON, user: userID)
/// // → tool_result {"tool_use_id": use.id, "content": outcome.text, "is_error": outcome.isError}
/// await registry.shutdown()
/// ```
///
/// Start-up fails when any configured server cannot be started or listed (a misconfigured server is one clear error
/// line at start-up, not tools that silently never appear). Once running, failures are per call: every failure of a
/// call is a `ToolOutcome` with `isError`, never a throw.
public final class ToolRegistry: Sendable {
    /// Every tool, sorted by name (byte-stable across starts, so the prompt cache prefix holds).
    public let definitions: [ToolDefinition]
    private let routes: [String: Route]
    private let servers: [ToolServer]

    private enum Route: Sendable {
        case mcp(ToolServer, tool: String)
        case builtin(any BuiltinTool)
    }

    private init(definitions: [ToolDefinition], routes: [String: Route], servers: [ToolServer]) {
        self.definitions = definitions
        self.routes = routes
        self.servers = servers
    }

    /// A registry with no tools.
    public static let empty = ToolRegistry(definitions: [], routes: [:], servers: [])

    /// Starts (stdio) or connects to (HTTP) every configured server in parallel and lists their tools.
    ///
    /// - Throws: `ToolRegistryError` naming the first server that failed (the others are shut down), or a built-in
    ///   tool with an invalid or duplicate name.
    public static func start(
        configuration: ToolsConfiguration, builtins: [any BuiltinTool] = [], logger: Logger
    ) async throws -> ToolRegistry {
        var routes: [String: Route] = [:]
        var definitions: [ToolDefinition] = []
        for builtin in builtins {
            let name = builtin.definition.name
            guard ToolNames.isValidForClaude(name), !name.contains("__") else {
                throw ToolRegistryError(
                    "built-in tool '\(name)': the name must match ^[a-zA-Z0-9_-]{1,64}$ without '__'")
            }
            guard routes[name] == nil else { throw ToolRegistryError("built-in tool '\(name)' is registered twice") }
            routes[name] = .builtin(builtin)
            definitions.append(builtin.definition)
        }
        let servers = configuration.servers.map { ToolServer(configuration: $0, logger: logger) }
        let failures = await withTaskGroup(of: (String, String?).self) { group in
            for server in servers {
                group.addTask {
                    do {
                        try await server.start()
                        return (await server.name, nil)
                    } catch is TimeoutError {
                        return (
                            await server.name, "no answer within \(ToolServer.seconds(server.startupTimeout)) s"
                        )
                    } catch {
                        return (await server.name, "\(error)")
                    }
                }
            }
            var failures: [(String, String)] = []
            for await (name, failure) in group { if let failure { failures.append((name, failure)) } }
            return failures.sorted { $0.0 < $1.0 }
        }
        if let (name, reason) = failures.first {
            for server in servers { await server.shutdown() }
            throw ToolRegistryError("TOOLS_CONFIG: server '\(name)' failed to start: \(reason)")
        }
        for server in servers {
            let tools = await server.tools
            for tool in tools {
                routes[tool.definition.name] = .mcp(server, tool: tool.name)
                definitions.append(tool.definition)
            }
            logger.info(
                "tool server ready",
                metadata: [
                    "server": "\(server.configuration.name)", "tools": "\(tools.map(\.name).joined(separator: ","))",
                ])
        }
        return ToolRegistry(
            definitions: definitions.sorted { $0.name < $1.name }, routes: routes, servers: servers)
    }

    /// Runs the tool Claude asked for.
    ///
    /// - Parameters:
    ///   - name: the `tool_use` block's name (a `definitions` name; anything else is an "unknown tool" outcome).
    ///   - input: the `tool_use` input as JSON text; it must be a JSON object.
    ///   - context: the verified user (and thread) the turn runs for.
    /// - Returns: the outcome; `isError` for an unknown tool, input that is not a JSON object, a tool error, a timeout
    ///   ("timed out after N s"), a server that exited mid-call, or cancellation of the calling task.
    public func call(name: String, input: String, context: ToolCallContext) async -> ToolOutcome {
        guard let route = routes[name] else {
            return .error(
                "unknown tool '\(name)'; the available tools are: \(definitions.map(\.name).joined(separator: ", "))")
        }
        guard Self.isJSONObject(input) else {
            return .error("the tool input is not a JSON object")
        }
        switch route {
        case .mcp(let server, let tool):
            return await server.call(tool: tool, arguments: input)
        case .builtin(let builtin):
            return await builtin.call(input: input, context: context)
        }
    }

    /// `call(name:input:context:)` for a user without a thread.
    public func call(name: String, input: String, user: UUID) async -> ToolOutcome {
        await call(name: name, input: input, context: ToolCallContext(userID: user))
    }

    /// Ends every server session: stdio servers get their stdin closed, then SIGTERM, then SIGKILL after a short grace
    /// (about 2 s each step); returns when they are gone. Later calls fail as unavailable.
    public func shutdown() async {
        await withTaskGroup(of: Void.self) { group in
            for server in servers { group.addTask { await server.shutdown() } }
        }
    }

    static func isJSONObject(_ text: String) -> Bool {
        guard let data = text.data(using: .utf8),
            let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        else { return false }
        return value is [String: Any]
    }
}

/// The registry could not start; `description` is one line naming the server or tool and the reason.
public struct ToolRegistryError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
