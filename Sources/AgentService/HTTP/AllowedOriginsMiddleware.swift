import HTTPTypes
import Hummingbird

extension HTTPField.Name {
    static let idempotencyKey = Self("Idempotency-Key")!
    static let xAccelBuffering = Self("X-Accel-Buffering")!
    static let xThreadID = Self("X-Thread-Id")!
    static let xTurnID = Self("X-Turn-Id")!
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let lastEventID = Self("Last-Event-ID")!
}

/// CORS for a configured list of origins (`CORS_ALLOWED_ORIGINS`), preflight included, and the guard against
/// cross-site writes.
///
/// Hummingbird's `CORSMiddleware` takes its origin list only as variadic arguments, so a list read from the
/// environment needs this small equivalent. It sits outside the JSON error middleware, so error responses (400, 401,
/// 404, 409, 413, 429, 503) carry the CORS headers too and a frontend can read why a request failed. A request from
/// an origin not on the list gets no CORS headers (the browser then blocks it), and a state-changing one (POST,
/// DELETE) is refused with 403 before it runs: browsers send "simple" cross-site POSTs without a preflight. `*`
/// allows every origin. Requests without `Origin` (curl, servers) are not browser requests and pass, and so do
/// same-origin ones (the reference page at `/`): an `Origin` equal to `http(s)://` + the request's `Host` is this
/// service's own page, which a foreign site cannot forge (its requests carry its own origin).
struct AllowedOriginsMiddleware<Context: RequestContext>: RouterMiddleware {
    let origins: Set<String>
    let allowsAll: Bool

    init(origins: [String]) {
        self.origins = Set(origins.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 })
        self.allowsAll = origins.contains("*")
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let origin = request.headers[.origin], !Self.isSameOrigin(origin, authority: request.head.authority)
        else { return try await next(request, context) }
        guard allowsAll || origins.contains(origin) else {
            if [.post, .put, .patch, .delete].contains(request.method) {
                return try APIError.forbiddenOrigin(origin).response(from: request, context: context)
            }
            return try await next(request, context)
        }
        let allowOrigin = allowsAll ? "*" : origin
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            return Response(
                status: .noContent,
                headers: [
                    .accessControlAllowOrigin: allowOrigin,
                    .accessControlAllowMethods: "GET, POST, DELETE, OPTIONS",
                    .accessControlAllowHeaders: "Accept, Authorization, Content-Type, Idempotency-Key, Last-Event-ID",
                    .accessControlMaxAge: "600",
                    .vary: "Origin",
                ])
        }
        var response = try await next(request, context)
        response.headers[.accessControlAllowOrigin] = allowOrigin
        response.headers[.accessControlExposeHeaders] = "X-Thread-Id, X-Turn-Id"
        response.headers[.vary] = "Origin"
        return response
    }

    /// True when `origin` is `http://` or `https://` followed by exactly the request's `Host` (case-insensitive).
    static func isSameOrigin(_ origin: String, authority: String?) -> Bool {
        guard let authority, !authority.isEmpty else { return false }
        let origin = origin.lowercased()
        let host = authority.lowercased()
        return origin == "http://\(host)" || origin == "https://\(host)"
    }
}
