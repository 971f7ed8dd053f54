import Foundation

/// Where a transport reports what arrives. Called from the transport's own threads.
struct TransportHandlers: Sendable {
    /// One JSON-RPC message (or batch) from the server.
    var message: @Sendable ([UInt8]) -> Void
    /// A request could not be delivered or its answer not read (HTTP: its POST failed); the connection may live on.
    var requestFailed: @Sendable (_ id: Int, _ reason: String) -> Void
    /// The connection is over (the process exited, the stream ended, a message was too large); called once.
    var closed: @Sendable (_ reason: String) -> Void
}

/// Moves JSON-RPC messages to and from one MCP server. Blocking work happens on the transport's own threads.
protocol MCPTransport: AnyObject, Sendable {
    /// Starts the transport; `handlers` receive everything from now on.
    func start(_ handlers: TransportHandlers) throws
    /// Queues one message; never blocks. `requestID` names the request it carries (nil for notifications and
    /// responses), so a failed delivery can be reported for it.
    func send(_ message: [UInt8], requestID: Int?)
    /// Ends the connection (a stdio server is asked to exit, then terminated, then killed), waiting for it.
    func close() async
}

enum MCPTransportFactory {
    static func make(_ configuration: ServerConfiguration) -> any MCPTransport {
        switch configuration.transport {
        case .stdio(let command, let arguments, let environment):
            StdioTransport(command: command, arguments: arguments, environment: environment)
        case .http(let url, let headers):
            HTTPTransport(url: url, headers: headers)
        }
    }
}
