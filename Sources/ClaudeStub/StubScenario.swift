/// How the stub answers one request. Build one with the static factories and refine it with the modifiers:
///
/// ```swift
/// stub.enqueue(.reply("héllo wörld").lineEnding(.crlf).chunkSize(1...7), .httpError(status: 529))
/// ```
public struct StubScenario: Sendable {
    /// Line terminator of the SSE stream.
    public enum LineEnding: String, Sendable {
        case lf, crlf, cr
    }

    enum Behavior: Sendable {
        case reply(String?)
        case httpError(status: Int, type: String, message: String, headers: [(String, String)], errorCode: String?)
        case nonJSONError(status: Int, body: String)
        case midStreamError(afterDeltas: Int, type: String)
        case truncate(afterDeltas: Int)
        case truncateByReset(afterDeltas: Int)
        case stall(afterDeltas: Int)
        case holdOpenAfterStop
        case multiBlock
        case failFirst(Int)
        case blocks([StubBlock])
    }

    var behavior: Behavior
    var lineEnding: LineEnding = .lf
    var chunkSizes: ClosedRange<Int>?
    var comments = false
    var stopReason = "end_turn"
    var stopSequence: String?
    var firstDeltaDelay: Duration?
    var deltaInterval: Duration?
    var deltaCount: Int?
    var pingEvery: Int?
    var padJSON: Bool?
    var cutInToolInput = false

    init(_ behavior: Behavior) {
        self.behavior = behavior
    }

    // MARK: Factories

    /// The normal streamed reply; `nil` text gives the default echo reply.
    public static func reply(_ text: String? = nil) -> StubScenario { StubScenario(.reply(text)) }

    /// A JSON error response before any streaming (`{"type":"error","error":{...},"request_id":...}`).
    public static func httpError(
        status: Int, type: String? = nil, message: String = "stub error", headers: [(String, String)] = [],
        errorCode: String? = nil
    ) -> StubScenario {
        StubScenario(
            .httpError(
                status: status, type: type ?? defaultErrorType(status), message: message, headers: headers,
                errorCode: errorCode))
    }

    /// A non-JSON error response (like a proxy's HTML 413).
    public static func nonJSONError(status: Int, body: String) -> StubScenario {
        StubScenario(.nonJSONError(status: status, body: body))
    }

    /// A 200 stream that sends `event: error` after N text deltas and ends.
    public static func midStreamError(afterDeltas: Int, type: String = "overloaded_error") -> StubScenario {
        StubScenario(.midStreamError(afterDeltas: afterDeltas, type: type))
    }

    /// A 200 stream that ends cleanly after N text deltas, without `message_stop`.
    public static func truncate(afterDeltas: Int) -> StubScenario { StubScenario(.truncate(afterDeltas: afterDeltas)) }

    /// A 200 stream whose connection is closed abruptly after N text deltas.
    public static func truncateByReset(afterDeltas: Int) -> StubScenario {
        StubScenario(.truncateByReset(afterDeltas: afterDeltas))
    }

    /// A 200 stream that goes silent after N text deltas (until the client gives up).
    public static func stall(afterDeltas: Int) -> StubScenario { StubScenario(.stall(afterDeltas: afterDeltas)) }

    /// A normal stream that keeps the connection open after `message_stop`.
    public static var holdOpenAfterStop: StubScenario { StubScenario(.holdOpenAfterStop) }

    /// Thinking, then text, then tool_use with `input_json_delta` blocks.
    public static var multiBlock: StubScenario { StubScenario(.multiBlock) }

    /// A reply made of the given blocks, in order (text, tool_use, thinking, redacted thinking), with the given stop
    /// reason (`tool_use` when a block is a tool call, `end_turn` otherwise). The continuation that answers the
    /// tool calls gets the default reply `Tool results: …` unless another scenario is queued.
    public static func blocks(_ blocks: [StubBlock], stopReason: String? = nil) -> StubScenario {
        var scenario = StubScenario(.blocks(blocks))
        scenario.stopReason = stopReason ?? (blocks.contains(where: \.isToolUse) ? "tool_use" : "end_turn")
        return scenario
    }

    /// A normal reply with the given stop reason (and stop sequence).
    public static func stopReason(_ reason: String, stopSequence: String? = nil) -> StubScenario {
        StubScenario.reply().stopReason(reason, stopSequence: stopSequence)
    }

    /// A 529 for the first N attempts of the same request body, then the normal reply.
    public static func failFirst(_ n: Int) -> StubScenario { StubScenario(.failFirst(n)) }

    /// The default reply with the given line ending.
    public static func lineEnding(_ ending: LineEnding) -> StubScenario { StubScenario.reply().lineEnding(ending) }

    /// The default reply with every write split at random sizes in `range` (inside UTF-8 sequences and CRLFs).
    public static func chunkSize(_ range: ClosedRange<Int>) -> StubScenario { StubScenario.reply().chunkSize(range) }

    /// The default reply with SSE comments interleaved.
    public static var comments: StubScenario { StubScenario.reply().withComments() }

    // MARK: Modifiers

    /// Uses the given line ending.
    public func lineEnding(_ ending: LineEnding) -> StubScenario { with { $0.lineEnding = ending } }

    /// Splits every write at random sizes in `range`.
    public func chunkSize(_ range: ClosedRange<Int>) -> StubScenario { with { $0.chunkSizes = range } }

    /// Interleaves `: comment` lines.
    public func withComments() -> StubScenario { with { $0.comments = true } }

    /// Sets the stop reason (and stop sequence).
    public func stopReason(_ reason: String, stopSequence: String? = nil) -> StubScenario {
        with {
            $0.stopReason = reason
            $0.stopSequence = stopSequence
        }
    }

    /// Overrides pacing.
    public func paced(firstDeltaDelay: Duration? = nil, deltaInterval: Duration? = nil, deltaCount: Int? = nil)
        -> StubScenario
    {
        with {
            $0.firstDeltaDelay = firstDeltaDelay ?? $0.firstDeltaDelay
            $0.deltaInterval = deltaInterval ?? $0.deltaInterval
            $0.deltaCount = deltaCount ?? $0.deltaCount
        }
    }

    /// Ends the stream cleanly, without `message_stop`, halfway through the first tool call's input
    /// (``blocks(_:stopReason:)`` scenarios).
    public func cutInsideToolInput() -> StubScenario { with { $0.cutInToolInput = true } }

    /// Sends pings every N deltas (0: one after the first block start).
    public func pings(every n: Int) -> StubScenario { with { $0.pingEvery = n } }

    /// Pads JSON payloads with spaces.
    public func paddedJSON(_ on: Bool = true) -> StubScenario { with { $0.padJSON = on } }

    private func with(_ change: (inout StubScenario) -> Void) -> StubScenario {
        var copy = self
        change(&copy)
        return copy
    }

    static func defaultErrorType(_ status: Int) -> String {
        switch status {
        case 400: "invalid_request_error"
        case 401: "authentication_error"
        case 402: "billing_error"
        case 403: "permission_error"
        case 404: "not_found_error"
        case 408: "timeout_error"
        case 409: "conflict_error"
        case 413: "request_too_large"
        case 429: "rate_limit_error"
        case 504: "timeout_error"
        case 529: "overloaded_error"
        default: "api_error"
        }
    }
}
