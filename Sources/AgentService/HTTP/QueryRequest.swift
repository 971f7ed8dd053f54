import Foundation
import HTTPTypes
import Hummingbird

/// Validates the body of `POST /query_stream`, `/query` and `/chat` before anything is written.
///
/// Seed-compatible shape: `{"question", "user_id", "user_timezone", "thread_id"?}`. Unknown fields are ignored.
/// Every rejection names the field and what is accepted.
struct QueryRequest: Sendable {
    var question: String
    /// The `user_id` the body names, unchecked: the caller's identity decides what it must be (`RequestIdentity`).
    var claimedUserID: String?
    var timeZone: TimeZone
    var threadID: String?
    var idempotencyKey: String?

    struct Limits: Sendable {
        var maxQuestionLength: Int
    }

    static func parse(body: ByteBuffer, headers: HTTPFields, limits: Limits) throws(APIError) -> QueryRequest {
        let object = try jsonObject(body: body, headers: headers)
        let question = try Self.question(object["question"], limits: limits)
        let claimedUserID = try Self.claimedUserID(object["user_id"])
        let timeZone = try Self.timeZone(object["user_timezone"])
        let threadID = try Self.threadID(object["thread_id"])
        let key = try Self.idempotencyKey(headers[.idempotencyKey])
        return QueryRequest(
            question: question, claimedUserID: claimedUserID, timeZone: timeZone, threadID: threadID, idempotencyKey: key)
    }

    /// The body as a JSON object: `application/json` (or `+json`), valid UTF-8, no key given twice.
    static func jsonObject(body: ByteBuffer, headers: HTTPFields) throws(APIError) -> [String: Any] {
        // Only JSON: a text/plain or form POST is what a browser sends cross-site without a preflight.
        guard let contentType = headers[.contentType] else { throw .unsupportedMediaType(nil) }
        let media =
            contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        guard media == "application/json" || (media.hasPrefix("application/") && media.hasSuffix("+json")) else {
            throw .unsupportedMediaType(contentType)
        }
        let bytes = Array(body.readableBytesView)
        guard !bytes.isEmpty else { throw .badRequest("The request body is empty; send a JSON object.") }
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw .badRequest("The request body is not valid UTF-8.")
        }
        guard let json = try? JSONSerialization.jsonObject(with: Data(bytes), options: []) else {
            throw .badRequest("The request body is not valid JSON.")
        }
        guard let object = json as? [String: Any] else {
            throw .badRequest("The request body must be a JSON object.")
        }
        if let key = JSONDuplicateKeys.first(in: bytes) {
            throw .invalid(String(key.prefix(64)), "appears more than once in the JSON body; send each field once")
        }
        return object
    }

    static func question(_ value: Any?, limits: Limits) throws(APIError) -> String {
        guard let value, !(value is NSNull) else { throw .invalid("question", "is required") }
        guard let text = value as? String else { throw .invalid("question", "must be a string") }
        if text.unicodeScalars.contains("\u{0}") {
            throw .invalid("question", "contains a NUL character (U+0000), which cannot be stored")
        }
        if text.unicodeScalars.contains(where: { (0xD800...0xDFFF).contains($0.value) || $0 == "\u{FFFE}" }) {
            throw .invalid("question", "contains an invalid Unicode character")
        }
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw .invalid("question", "must not be empty")
        }
        let length = text.unicodeScalars.count
        guard length <= limits.maxQuestionLength else {
            throw .invalid("question", "is \(length) characters long; the limit is \(limits.maxQuestionLength)")
        }
        return text
    }

    static func claimedUserID(_ value: Any?) throws(APIError) -> String? {
        guard let value, !(value is NSNull) else { return nil }
        guard let text = value as? String else { throw .invalid("user_id", "must be a UUID string") }
        return text
    }

    static func userID(_ text: String) throws(APIError) -> UUID {
        guard text.count == 36, let id = UUID(uuidString: text) else {
            throw .invalid("user_id", "must be a UUID like 3f2b8a4e-5c1d-4e7f-9a0b-1c2d3e4f5a6b")
        }
        return id
    }

    static func timeZone(_ value: Any?) throws(APIError) -> TimeZone {
        guard let value, !(value is NSNull) else { return TimeZone(identifier: "UTC")! }
        guard let text = value as? String else { throw .invalid("user_timezone", "must be an IANA time zone name") }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty { return TimeZone(identifier: "UTC")! }
        guard trimmed.count <= 64,
            trimmed.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "/_+-".contains($0)) }),
            let zone = TimeZone(identifier: trimmed)
        else {
            throw .invalid(
                "user_timezone",
                "'\(trimmed.prefix(64))' is not an IANA time zone such as Europe/Berlin or America/New_York")
        }
        return zone
    }

    static let threadIDCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@")

    static func threadID(_ value: Any?) throws(APIError) -> String? {
        guard let value, !(value is NSNull) else { return nil }
        guard let text = value as? String else { throw .invalid("thread_id", "must be a string") }
        return try threadID(text)
    }

    static func threadID(_ text: String) throws(APIError) -> String {
        guard (1...128).contains(text.count) else { throw .invalid("thread_id", "must be 1 to 128 characters long") }
        guard text != ".", text != ".." else { throw .invalid("thread_id", "must not be '.' or '..'") }
        guard text.allSatisfy({ threadIDCharacters.contains($0) }) else {
            throw .invalid("thread_id", "may contain only letters, digits and - _ . : @")
        }
        return text
    }

    static func idempotencyKey(_ value: String?) throws(APIError) -> String? {
        guard let value else { return nil }
        guard (1...255).contains(value.utf8.count), value.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw .invalid("Idempotency-Key", "must be 1 to 255 visible ASCII characters")
        }
        return value
    }
}
