import HTTPTypes
import Hummingbird

extension HTTPField.Name {
    static let idempotencyKey = Self("Idempotency-Key")!
    static let xAccelBuffering = Self("X-Accel-Buffering")!
    static let xThreadID = Self("X-Thread-Id")!
    static let xTurnID = Self("X-Turn-Id")!
}

/// CORS for a configured list of origins (`CORS_ALLOWED_ORIGINS`), preflight included.
///
/// Hummingbird's `CORSMiddleware` takes its origin list only as variadic arguments, so a list read from the
/// environment needs this small equivalent. A request from an origin not on the list gets no CORS headers (the
/// browser then blocks it); `*` allows every origin.
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
        guard let origin = request.headers[.origin], allowsAll || origins.contains(origin) else {
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
}
