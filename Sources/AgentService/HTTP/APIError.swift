import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// An error answered before any streaming starts: JSON `{"error": {"type", "message"}}` with a fitting status.
///
/// The message is written for the developer wiring up a frontend: it names the field and what is accepted.
struct APIError: HTTPResponseError, Sendable {
    var status: HTTPResponse.Status
    var type: String
    var message: String
    var field: String?
    var headers: HTTPFields = [:]

    static func invalid(_ field: String, _ message: String) -> APIError {
        APIError(status: .badRequest, type: "invalid_request", message: "\(field): \(message)", field: field)
    }

    static func badRequest(_ message: String) -> APIError {
        APIError(status: .badRequest, type: "invalid_request", message: message)
    }

    /// 401 for a missing or rejected access token; `message` names the failed check.
    static func unauthorized(_ message: String) -> APIError {
        APIError(
            status: .unauthorized, type: "unauthorized", message: message,
            headers: [.wwwAuthenticate: #"Bearer error="invalid_token""#])
    }

    static let forbidden = APIError(
        status: .forbidden, type: "forbidden",
        message: "user_id does not match the signed-in user; omit it or send the token's own user id.")

    /// 503 while the signing keys cannot be fetched: the token may well be valid.
    static func authUnavailable(_ message: String) -> APIError {
        APIError(
            status: .serviceUnavailable, type: "auth_unavailable", message: message, headers: [.retryAfter: "5"])
    }

    static func forbiddenOrigin(_ origin: String) -> APIError {
        APIError(
            status: .forbidden, type: "forbidden_origin",
            message: "Requests from origin '\(origin.prefix(200))' may not change data; add it to CORS_ALLOWED_ORIGINS.")
    }

    static let threadNotFound = APIError(
        status: .notFound, type: "not_found", message: "No such thread for this user.")

    static let threadBusy = APIError(
        status: .conflict, type: "thread_busy",
        message: "Another reply is still streaming on this thread; wait for its `done` event and send again.")

    static func turnInProgress(_ turnID: UUID) -> APIError {
        APIError(
            status: .conflict, type: "turn_in_progress",
            message: "A turn with this Idempotency-Key (\(turnID.uuidString.lowercased())) is still streaming.")
    }

    static func tooManyTurns(perUser: Bool, limit: Int) -> APIError {
        APIError(
            status: .tooManyRequests, type: "too_many_turns",
            message: perUser
                ? "You already have \(limit) replies running; wait for one to finish (its done event) and send again."
                : "The service is running its maximum of \(limit) replies; retry shortly.",
            headers: [.retryAfter: perUser ? "5" : "2"])
    }

    static func idempotencyKeyReused(_ turnID: UUID) -> APIError {
        APIError(
            status: .unprocessableContent, type: "idempotency_key_reused",
            message:
                "This Idempotency-Key was used for another request (turn \(turnID.uuidString.lowercased())) with a different question or thread; use a new key for a new request.")
    }

    /// DELETE of a thread whose reply is still streaming.
    static let replyStreaming = APIError(
        status: .conflict, type: "turn_in_progress",
        message: "A reply is still streaming on this thread; wait for its done event (or stop it), then delete.")

    static func requestTimeout(seconds: Int) -> APIError {
        APIError(
            status: .requestTimeout, type: "request_timeout",
            message: "The request body did not arrive within \(seconds) s.", headers: [.connection: "close"])
    }

    static let shuttingDown = APIError(
        status: .serviceUnavailable, type: "shutting_down",
        message: "The service is shutting down; retry shortly.", headers: [.retryAfter: "2"])

    static let databaseUnavailable = APIError(
        status: .serviceUnavailable, type: "database_unavailable",
        message: "The database is unavailable; nothing was stored. Retry shortly.", headers: [.retryAfter: "2"])

    static func payloadTooLarge(limit: Int) -> APIError {
        APIError(
            status: .contentTooLarge, type: "payload_too_large",
            message: "The request body is larger than \(limit) bytes.")
    }

    static func unsupportedMediaType(_ type: String?) -> APIError {
        APIError(
            status: .unsupportedMediaType, type: "unsupported_media_type",
            message: type.map { "Content-Type '\($0.prefix(100))' is not supported; send application/json." }
                ?? "The request has no Content-Type; send application/json.")
    }

    static func methodNotAllowed(_ method: HTTPRequest.Method, allowed: [String]) -> APIError {
        APIError(
            status: .methodNotAllowed, type: "method_not_allowed",
            message: "\(method.rawValue) is not allowed here; use \(allowed.joined(separator: " or ")).",
            headers: [.allow: allowed.joined(separator: ", ")])
    }

    static let routeNotFound = APIError(status: .notFound, type: "not_found", message: "No such endpoint.")

    static let internalError = APIError(
        status: .internalServerError, type: "internal_error", message: "Something went wrong on our side.")

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var body: [String: Any] = ["type": type, "message": message]
        if let field { body["field"] = field }
        var response = JSONResponse.make(status: status, object: ["error": body])
        for field in headers { response.headers.append(field) }
        return response
    }
}

/// Builds JSON responses.
enum JSONResponse {
    static func make(status: HTTPResponse.Status = .ok, object: Any) -> Response {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return make(status: status, data: data)
    }

    private static func make(status: HTTPResponse.Status, data: Data) -> Response {
        var buffer = ByteBuffer()
        buffer.writeBytes(data)
        buffer.writeInteger(UInt8(ascii: "\n"))
        // Replies and questions are private: never cached, never sniffed into something a browser would run.
        return Response(
            status: status,
            headers: [
                .contentType: "application/json; charset=utf-8", .contentLength: String(buffer.readableBytes),
                .xContentTypeOptions: "nosniff", .cacheControl: "no-store",
            ],
            body: .init(byteBuffer: buffer))
    }
}

/// Turns every error and every bodiless 404/405 into the JSON error shape: never HTML, never a stack trace.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Known paths and their methods, for 405 instead of 404.
    let routes: [(pattern: [String], methods: [String])]
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            let response = try await next(request, context)
            if response.status == .notFound, response.headers[.contentType] == nil {
                return try notFound(request, context: context)
            }
            return response
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as HTTPError {
            if error.status == .notFound { return try notFound(request, context: context) }
            let type = error.status == .contentTooLarge ? "payload_too_large" : "http_error"
            return try APIError(status: error.status, type: type, message: error.body ?? error.status.reasonPhrase)
                .response(from: request, context: context)
        } catch let error as any HTTPResponseError {
            let type = error.status == .contentTooLarge ? "payload_too_large" : "http_error"
            return try APIError(status: error.status, type: type, message: error.status.reasonPhrase)
                .response(from: request, context: context)
        } catch {
            logger.error("unhandled error", metadata: ["error": "\(String(reflecting: error))"])
            return try APIError.internalError.response(from: request, context: context)
        }
    }

    private func notFound(_ request: Request, context: Context) throws -> Response {
        let parts = request.uri.path.split(separator: "/").map(String.init)
        for route in routes where route.pattern.count == parts.count {
            let matches = zip(route.pattern, parts).allSatisfy { $0 == "*" || $0 == $1 }
            if matches, !route.methods.contains(request.method.rawValue) {
                return try APIError.methodNotAllowed(request.method, allowed: route.methods)
                    .response(from: request, context: context)
            }
        }
        return try APIError.routeNotFound.response(from: request, context: context)
    }
}
