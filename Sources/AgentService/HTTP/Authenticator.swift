import Foundation
import HTTPTypes
import Hummingbird
import Logging
import SupabaseAuth

/// Who a request acts for.
enum RequestIdentity: Sendable {
    /// A verified Supabase access token: the user is its `sub`.
    case verified(VerifiedToken)
    /// No auth configured (development mode): the user is the `user_id` the request names.
    case development

    /// The user the request acts for. With a verified token a named `user_id` is only a cross-check: it may be
    /// omitted, and must equal the token's subject when given.
    ///
    /// - Parameter claimed: the `user_id` from the body or query, if any.
    func user(claimed: String?) throws(APIError) -> UUID {
        switch self {
        case .development:
            guard let claimed else { throw .invalid("user_id", "is required") }
            return try QueryRequest.userID(claimed)
        case .verified(let token):
            guard let claimed else { return token.userID }
            let named = try QueryRequest.userID(claimed)
            guard named == token.userID else { throw .forbidden }
            return named
        }
    }
}

/// Verifies the `Authorization: Bearer` token of thread requests when auth is configured.
///
/// Failures are answered 401 with the failed check and counted by reason; the token itself is never logged.
struct Authenticator: Sendable {
    /// nil in development mode.
    let verifier: TokenVerifier?
    let metrics: ServiceMetrics
    let logger: Logger

    func identify(_ request: Request) async throws(APIError) -> RequestIdentity {
        guard let verifier else { return .development }
        do throws(AuthFailure) {
            let token = try Self.bearerToken(request.headers)
            return .verified(try await verifier.verify(token))
        } catch {
            metrics.authFailed(reason: error.reason.rawValue)
            logger.debug("request refused by token verification", metadata: ["reason": "\(error.reason.rawValue)"])
            if error.reason == .unavailable { throw .authUnavailable(error.message) }
            throw .unauthorized(error.message)
        }
    }

    /// The token of an `Authorization: Bearer <token>` header.
    static func bearerToken(_ headers: HTTPFields) throws(AuthFailure) -> String {
        let values = headers[values: .authorization]
        guard let value = values.first else {
            throw AuthFailure(.missing, "missing: send Authorization: Bearer <Supabase access token>")
        }
        guard values.count == 1 else { throw AuthFailure(.malformed, "malformed: more than one Authorization header") }
        let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard let scheme = parts.first, scheme.lowercased() == "bearer" else {
            throw AuthFailure(.malformed, "malformed: the Authorization scheme must be Bearer")
        }
        let token = parts.count == 2 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
        guard !token.isEmpty else { throw AuthFailure(.missing, "missing: the Bearer token is empty") }
        return token
    }

    /// Compares a presented secret with the expected one in time independent of where they differ.
    static func constantTimeEquals(_ presented: String, _ expected: String) -> Bool {
        let a = Array(presented.utf8)
        let b = Array(expected.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<b.count { difference |= (index < a.count ? a[index] : 0) ^ b[index] }
        return difference == 0
    }
}
