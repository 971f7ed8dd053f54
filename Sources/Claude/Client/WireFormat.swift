import Foundation

/// The JSON shape of a streamed event (read from a `JSONValue`, below); unknown fields are ignored.
struct WireEvent {
    var type: String
    var index: Int?
    var message: WireMessage?
    var content_block: WireBlock?
    var delta: WireDelta?
    var usage: WireUsage?
    var error: WireErrorDetail?
    var request_id: String?
}

// Streamed events are read through `JSONValue` rather than `JSONDecoder`: decoding every delta with `Codable` was
// a fifth of the service's CPU with long replies (`perf`, 2,000 streams, 40 deltas each), most of it generic
// container machinery. Fields of an unexpected type read as absent, as unknown fields always did.
extension WireEvent {
    /// The event in `json`, or nil when it is not an object with a string `type`.
    init?(_ json: JSONValue) {
        guard let object = json.objectValue, let type = object["type"]?.stringValue else { return nil }
        self.type = type
        index = object["index"]?.intValue
        message = object["message"].flatMap(WireMessage.init)
        content_block = object["content_block"].flatMap(WireBlock.init)
        delta = object["delta"].flatMap(WireDelta.init)
        usage = object["usage"].flatMap(WireUsage.init)
        error = object["error"].flatMap(WireErrorDetail.init)
        request_id = object["request_id"]?.stringValue
    }
}

extension WireMessage {
    init?(_ json: JSONValue) {
        guard let object = json.objectValue else { return nil }
        id = object["id"]?.stringValue
        model = object["model"]?.stringValue
        if case .array(let blocks)? = object["content"] { content = blocks.compactMap(WireBlock.init) }
        stop_reason = object["stop_reason"]?.stringValue
        stop_sequence = object["stop_sequence"]?.stringValue
        usage = object["usage"].flatMap(WireUsage.init)
    }
}

extension WireBlock {
    init?(_ json: JSONValue) {
        guard let object = json.objectValue, let type = object["type"]?.stringValue else { return nil }
        self.type = type
        text = object["text"]?.stringValue
        id = object["id"]?.stringValue
        name = object["name"]?.stringValue
        data = object["data"]?.stringValue
    }
}

extension WireDelta {
    init?(_ json: JSONValue) {
        guard let object = json.objectValue else { return nil }
        type = object["type"]?.stringValue
        text = object["text"]?.stringValue
        partial_json = object["partial_json"]?.stringValue
        thinking = object["thinking"]?.stringValue
        signature = object["signature"]?.stringValue
        stop_reason = object["stop_reason"]?.stringValue
        stop_sequence = object["stop_sequence"]?.stringValue
    }
}

extension WireUsage {
    init?(_ json: JSONValue) {
        guard let object = json.objectValue else { return nil }
        input_tokens = object["input_tokens"]?.intValue
        output_tokens = object["output_tokens"]?.intValue
        cache_creation_input_tokens = object["cache_creation_input_tokens"]?.intValue
        cache_read_input_tokens = object["cache_read_input_tokens"]?.intValue
    }
}

extension WireErrorDetail {
    init?(_ json: JSONValue) {
        guard let object = json.objectValue else { return nil }
        type = object["type"]?.stringValue
        message = object["message"]?.stringValue
        details = object["details"]?.objectValue.map { Details(error_code: $0["error_code"]?.stringValue) }
    }
}

extension JSONValue {
    /// A number that is a whole `Int` (as `JSONDecoder` reads one), else nil.
    var intValue: Int? {
        guard case .number(let text) = self else { return nil }
        if let int = Int(text) { return int }
        guard let double = Double(text), double == double.rounded(), let int = Int(exactly: double) else { return nil }
        return int
    }
}

struct WireMessage: Decodable {
    var id: String?
    var model: String?
    var content: [WireBlock]?
    var stop_reason: String?
    var stop_sequence: String?
    var usage: WireUsage?
}

struct WireBlock: Decodable {
    var type: String
    var text: String?
    var id: String?
    var name: String?
    var data: String?
}

struct WireDelta {
    var type: String?
    var text: String?
    var partial_json: String?
    var thinking: String?
    var signature: String?
    var stop_reason: String?
    var stop_sequence: String?
}

struct WireUsage: Decodable {
    var input_tokens: Int?
    var output_tokens: Int?
    var cache_creation_input_tokens: Int?
    var cache_read_input_tokens: Int?

    /// Overwrites the fields this usage carries (usage in `message_delta` is cumulative, never added).
    func merged(into usage: Usage) -> Usage {
        var u = usage
        if let input_tokens { u.inputTokens = input_tokens }
        if let output_tokens { u.outputTokens = output_tokens }
        if let cache_creation_input_tokens { u.cacheCreationInputTokens = cache_creation_input_tokens }
        if let cache_read_input_tokens { u.cacheReadInputTokens = cache_read_input_tokens }
        return u
    }
}

struct WireErrorDetail: Decodable {
    struct Details: Decodable {
        var error_code: String?
    }
    var type: String?
    var message: String?
    var details: Details?
}

struct WireErrorBody: Decodable {
    var error: WireErrorDetail?
    var request_id: String?
}

extension ClaudeError {
    /// Builds the error for a non-2xx response from its body (JSON, or anything else such as a proxy's HTML).
    static func fromResponse(status: Int, headers: HTTPHeaders, body: [UInt8], policy: RetryPolicy, attempts: Int) -> (
        ClaudeError, errorCode: String?
    ) {
        let parsed = try? JSONDecoder().decode(WireErrorBody.self, from: Data(body))
        let requestID = headers["request-id"] ?? parsed?.request_id
        let message: String
        if let m = parsed?.error?.message {
            message = m
        } else {
            let text = String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            message = text.isEmpty ? "HTTP \(status) with an empty body" : "HTTP \(status): \(text)"
        }
        let code = parsed?.error?.details?.error_code
        let error = ClaudeError(
            kind: .api, status: status, type: parsed?.error?.type, message: message, requestID: requestID,
            isRetryable: policy.isRetryable(status: status, headers: headers, errorCode: code), attempts: attempts,
            retryAfter: RetryPolicy.requestedDelay(headers: headers, now: Date())
        )
        return (error, code)
    }
}
