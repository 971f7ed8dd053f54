public import Foundation

/// The operator's MCP servers, read from the JSON file named by `TOOLS_CONFIG`.
///
/// ```json
/// {"servers": {
///   "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}, "allow": ["get_current_time"]},
///   "docs": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer …"}, "timeout_seconds": 10}
/// }}
/// ```
///
/// Unknown keys, a server with both or neither of `command` and `url`, and names outside `^[a-zA-Z0-9_-]{1,32}$` are
/// refused with an error naming the server and the field.
public struct ToolsConfiguration: Sendable, Equatable {
    /// The servers by name, in name order.
    public var servers: [ServerConfiguration]

    public init(servers: [ServerConfiguration]) {
        self.servers = servers.sorted { $0.name < $1.name }
    }

    /// Decodes a configuration file's bytes.
    /// - Throws: `ToolsConfigurationError` naming the server and field that is wrong.
    public init(json: Data) throws {
        let file: ConfigurationFile
        do {
            file = try JSONDecoder().decode(ConfigurationFile.self, from: json)
        } catch let error as ToolsConfigurationError {
            throw error
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
            throw ToolsConfigurationError(
                "not valid JSON (\(context.underlyingError.map { "\($0)" } ?? context.debugDescription))")
        } catch let error as DecodingError {
            throw ToolsConfigurationError(Self.describe(error))
        }
        var servers: [ServerConfiguration] = []
        for (name, raw) in file.servers {
            servers.append(try raw.validated(name: name))
        }
        self.init(servers: servers)
    }

    /// Reads and decodes the file at `path`.
    public init(contentsOfFile path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ToolsConfigurationError("cannot read \(path)")
        }
        try self.init(json: data)
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "\(path(context.codingPath)): expected \(Self.typeName(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context.codingPath)): expected \(Self.typeName(type)), found null"
        case .keyNotFound(let key, let context):
            return "\(path(context.codingPath + [key])): missing"
        case .dataCorrupted(let context):
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Double.Type, is Int.Type: "a number"
        case is [String].Type, is [Any].Type: "an array of strings"
        case is [String: String].Type, is [String: Any].Type: "an object of strings"
        default: "\(type)"
        }
    }
}

/// One MCP server: how to reach it and what to take from it.
public struct ServerConfiguration: Sendable, Equatable {
    /// How the service talks to the server.
    public enum Transport: Sendable, Equatable {
        /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
        case stdio(command: String, arguments: [String], environment: [String: String])
        /// Streamable HTTP: JSON-RPC POSTed to one endpoint, answered as JSON or as an SSE stream.
        case http(url: URL, headers: [String: String])
    }

    public var name: String
    public var transport: Transport
    /// Tool names (the server's own) to offer; nil: all of them.
    public var allow: [String]?
    /// How long one call (and start-up) may take.
    public var timeout: Duration
    /// The most text of one tool result passed on to Claude.
    public var maxOutputBytes: Int

    public static let defaultTimeout: Duration = .seconds(30)
    public static let defaultMaxOutputBytes = 100_000

    public init(
        name: String, transport: Transport, allow: [String]? = nil, timeout: Duration = defaultTimeout,
        maxOutputBytes: Int = defaultMaxOutputBytes
    ) {
        self.name = name
        self.transport = transport
        self.allow = allow
        self.timeout = timeout
        self.maxOutputBytes = maxOutputBytes
    }
}

/// A configuration file that cannot be used; `description` says where and why.
public struct ToolsConfigurationError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = "TOOLS_CONFIG: \(description)" }
}

// MARK: - The file as written

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

private struct ConfigurationFile: Decodable {
    var servers: [String: RawServer]

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys where key.stringValue != "servers" {
            throw ToolsConfigurationError("unknown key '\(key.stringValue)' (the file has only \"servers\")")
        }
        guard container.contains(AnyKey(stringValue: "servers")) else {
            throw ToolsConfigurationError("servers: missing")
        }
        let serversContainer = try container.nestedContainer(
            keyedBy: AnyKey.self, forKey: AnyKey(stringValue: "servers"))
        var servers: [String: RawServer] = [:]
        for key in serversContainer.allKeys {
            let name = key.stringValue
            guard ServerName.isValid(name) else {
                throw ToolsConfigurationError(
                    "servers: the name '\(name)' is not allowed (1 to 32 of a-z, A-Z, 0-9, '_' and '-')")
            }
            servers[name] = try RawServer(from: serversContainer.superDecoder(forKey: key), name: name)
        }
        self.servers = servers
    }
}

enum ServerName {
    static func isValid(_ name: String) -> Bool {
        (1...32).contains(name.utf8.count) && name.utf8.allSatisfy(ToolNames.isNameByte)
    }
}

private struct RawServer {
    static let keys: Set<String> = [
        "command", "args", "env", "url", "headers", "allow", "timeout_seconds", "max_output_bytes",
    ]
    var command: String?
    var args: [String]?
    var env: [String: String]?
    var url: String?
    var headers: [String: String]?
    var allow: [String]?
    var timeoutSeconds: Double?
    var maxOutputBytes: Int?

    init(from decoder: any Decoder, name: String) throws {
        let container: KeyedDecodingContainer<AnyKey>
        do { container = try decoder.container(keyedBy: AnyKey.self) } catch {
            throw ToolsConfigurationError("servers.\(name): expected an object")
        }
        for key in container.allKeys where !Self.keys.contains(key.stringValue) {
            throw ToolsConfigurationError(
                "servers.\(name): unknown key '\(key.stringValue)' (known: \(Self.keys.sorted().joined(separator: ", ")))"
            )
        }
        func field<T: Decodable>(_ key: String, _ type: T.Type) throws -> T? {
            try container.decodeIfPresent(type, forKey: AnyKey(stringValue: key))
        }
        command = try field("command", String.self)
        args = try field("args", [String].self)
        env = try field("env", [String: String].self)
        url = try field("url", String.self)
        headers = try field("headers", [String: String].self)
        allow = try field("allow", [String].self)
        timeoutSeconds = try field("timeout_seconds", Double.self)
        maxOutputBytes = try field("max_output_bytes", Int.self)
    }

    func validated(name: String) throws -> ServerConfiguration {
        func fail(_ field: String, _ message: String) -> ToolsConfigurationError {
            ToolsConfigurationError("servers.\(name).\(field): \(message)")
        }
        let transport: ServerConfiguration.Transport
        switch (command, url) {
        case (let command?, nil):
            guard !command.isEmpty else { throw fail("command", "must not be empty") }
            if headers != nil { throw fail("headers", "only for a \"url\" server") }
            transport = .stdio(command: command, arguments: args ?? [], environment: env ?? [:])
        case (nil, let url?):
            guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(),
                scheme == "https" || scheme == "http", parsed.host?.isEmpty == false
            else { throw fail("url", "'\(url)' is not an http(s) URL") }
            if args != nil { throw fail("args", "only for a \"command\" server") }
            if env != nil { throw fail("env", "only for a \"command\" server") }
            for (header, value) in headers ?? [:]
            where header.isEmpty || header.contains(where: { $0 == ":" || $0.isNewline })
                || value.contains(where: \.isNewline)
            {
                throw fail("headers", "'\(header)' is not a valid header")
            }
            transport = .http(url: parsed, headers: headers ?? [:])
        case (nil, nil):
            throw ToolsConfigurationError("servers.\(name): needs \"command\" (stdio) or \"url\" (Streamable HTTP)")
        case (_?, _?):
            throw ToolsConfigurationError("servers.\(name): has both \"command\" and \"url\"; choose one")
        }
        if let allow, let bad = allow.first(where: { $0.isEmpty }) {
            throw fail("allow", "'\(bad)' is not a tool name")
        }
        var timeout = ServerConfiguration.defaultTimeout
        if let seconds = timeoutSeconds {
            guard seconds > 0, seconds <= 3600 else {
                throw fail("timeout_seconds", "must be above 0 and at most 3600")
            }
            timeout = .milliseconds(Int((seconds * 1000).rounded()))
        }
        let maxOutput = maxOutputBytes ?? ServerConfiguration.defaultMaxOutputBytes
        guard (1...MessageFramer.maxMessageBytes).contains(maxOutput) else {
            throw fail("max_output_bytes", "must be between 1 and \(MessageFramer.maxMessageBytes)")
        }
        return ServerConfiguration(
            name: name, transport: transport, allow: allow, timeout: timeout, maxOutputBytes: maxOutput)
    }
}
