import Foundation

/// The JSON shapes of streamed events and error bodies; unknown fields are ignored by `Decodable`.
struct WireEvent: Decodable {
    var type: String
    var index: Int?
    var message: WireMessage?
    var content_block: WireBlock?
    var delta: WireDelta?
    var usage: WireUsage?
    var error: WireErrorDetail?
    var request_id: String?
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

struct WireDelta: Decodable {
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
