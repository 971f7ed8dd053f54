import Foundation
import Synchronization

/// A parsed JSON object handed between threads; never mutated after parsing.
struct JSONObject: @unchecked Sendable {
    let value: [String: Any]
}

/// Why an MCP exchange failed; `description` is safe to log and to show the model.
struct MCPError: Error, CustomStringConvertible {
    enum Kind: Sendable { case closed, remote, local }
    let description: String
    let kind: Kind

    init(_ description: String, kind: Kind = .local) {
        self.description = description
        self.kind = kind
    }
}

/// One live MCP session: JSON-RPC 2.0 requests multiplexed by id over a transport.
///
/// Any number of requests may be in flight at once; each waits for the response with its id. Cancelling the calling
/// task resumes it at once with `CancellationError` and tells the server with `notifications/cancelled`. When the
/// transport closes, every waiting request fails with the reason (kind `.closed`).
final class MCPConnection: Sendable {
    static let protocolVersion = "2025-06-18"

    private struct State {
        var nextID = 1
        var pending: [Int: CheckedContinuation<JSONObject, any Error>] = [:]
        var cancelled: Set<Int> = []
        var closedReason: String?
    }

    let transport: any MCPTransport
    private let state = Mutex(State())

    init(transport: any MCPTransport) {
        self.transport = transport
    }

    /// Starts the transport and performs the handshake (`initialize`, then `notifications/initialized`).
    func open(clientVersion: String = "1.0") async throws {
        try transport.start(
            TransportHandlers(
                message: { [weak self] bytes in self?.received(bytes) },
                requestFailed: { [weak self] id, reason in self?.fail(id, MCPError(reason, kind: .remote)) },
                closed: { [weak self] reason in self?.closed(reason) }))
        let result = try await request(
            "initialize",
            params:
                #"{"protocolVersion":"\#(Self.protocolVersion)","capabilities":{},"clientInfo":{"name":"agent-service","version":"\#(clientVersion)"}}"#
        )
        guard result.value["protocolVersion"] is String else {
            throw MCPError("the server's initialize result has no protocolVersion", kind: .remote)
        }
        notify("notifications/initialized", params: nil)
    }

    /// Every tool the server lists, following `nextCursor` pages (at most 100 pages).
    func listTools() async throws -> [JSONObject] {
        var tools: [JSONObject] = []
        var cursor: String?
        for _ in 0..<100 {
            let params = cursor.map { #"{"cursor":\#(JSONText.quoted($0))}"# }
            let page = try await request("tools/list", params: params)
            for tool in page.value["tools"] as? [[String: Any]] ?? [] { tools.append(JSONObject(value: tool)) }
            guard let next = page.value["nextCursor"] as? String, !next.isEmpty else { return tools }
            cursor = next
        }
        return tools
    }

    /// `tools/call`; `arguments` is a JSON object's text, sent as it is.
    func callTool(_ name: String, arguments: String) async throws -> JSONObject {
        try await request("tools/call", params: #"{"name":\#(JSONText.quoted(name)),"arguments":\#(arguments)}"#)
    }

    /// Sends a request and waits for its result.
    /// - Throws: `MCPError` (`.remote` for a JSON-RPC error, `.closed` when the connection ended), or
    ///   `CancellationError`.
    func request(_ method: String, params: String?) async throws -> JSONObject {
        let id = state.withLock { state -> Int in
            defer { state.nextID += 1 }
            return state.nextID
        }
        let message =
            #"{"jsonrpc":"2.0","id":\#(id),"method":"\#(method)"\#(params.map { ",\"params\":\($0)" } ?? "")}"#
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<JSONObject, any Error>) in
                let refusal = state.withLock { state -> (any Error)? in
                    if state.cancelled.remove(id) != nil { return CancellationError() }
                    if let reason = state.closedReason { return MCPError(reason, kind: .closed) }
                    state.pending[id] = continuation
                    return nil
                }
                if let refusal {
                    continuation.resume(throwing: refusal)
                } else {
                    transport.send(Array(message.utf8), requestID: id)
                }
            }
        } onCancel: {
            let continuation = state.withLock { state in
                let continuation = state.pending.removeValue(forKey: id)
                if continuation == nil { state.cancelled.insert(id) }
                return continuation
            }
            if let continuation {
                continuation.resume(throwing: CancellationError())
                notify("notifications/cancelled", params: #"{"requestId":\#(id),"reason":"cancelled by the client"}"#)
            }
        }
    }

    func notify(_ method: String, params: String?) {
        let message = #"{"jsonrpc":"2.0","method":"\#(method)"\#(params.map { ",\"params\":\($0)" } ?? "")}"#
        transport.send(Array(message.utf8), requestID: nil)
    }

    /// Whether the transport has closed.
    var isClosed: Bool { state.withLock { $0.closedReason != nil } }

    func close() async {
        closed("the connection was closed")
        await transport.close()
    }

    // MARK: - Incoming

    private func received(_ bytes: [UInt8]) {
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(bytes)) else { return }
        let messages = (parsed as? [[String: Any]]) ?? [(parsed as? [String: Any]) ?? [:]]
        for message in messages { handle(message) }
    }

    private func handle(_ message: [String: Any]) {
        if let method = message["method"] as? String {
            // A request from the server: answer ping, refuse the rest (this client offers no capabilities).
            guard let id = message["id"], let idJSON = JSONText.encode(id) else { return }
            let reply =
                method == "ping"
                ? #"{"jsonrpc":"2.0","id":\#(idJSON),"result":{}}"#
                : #"{"jsonrpc":"2.0","id":\#(idJSON),"error":{"code":-32601,"message":"method not found"}}"#
            transport.send(Array(reply.utf8), requestID: nil)
            return
        }
        guard let id = (message["id"] as? NSNumber)?.intValue ?? (message["id"] as? String).flatMap({ Int($0) }) else {
            return
        }
        if let error = message["error"] as? [String: Any] {
            let text = error["message"] as? String ?? "unknown error"
            let code = (error["code"] as? NSNumber).map { " (\($0.intValue))" } ?? ""
            fail(id, MCPError("\(text)\(code)", kind: .remote))
        } else {
            let continuation = state.withLock { $0.pending.removeValue(forKey: id) }
            continuation?.resume(returning: JSONObject(value: message["result"] as? [String: Any] ?? [:]))
        }
    }

    private func fail(_ id: Int, _ error: MCPError) {
        let continuation = state.withLock { $0.pending.removeValue(forKey: id) }
        continuation?.resume(throwing: error)
    }

    private func closed(_ reason: String) {
        let waiting = state.withLock { state -> [CheckedContinuation<JSONObject, any Error>] in
            if state.closedReason == nil { state.closedReason = reason }
            defer { state.pending = [:] }
            return Array(state.pending.values)
        }
        for continuation in waiting { continuation.resume(throwing: MCPError(reason, kind: .closed)) }
    }
}
