/// Why a request's access token was not accepted.
///
/// `reason` is a bounded label (safe for metrics and logs); `message` says which check failed and what to do. Neither
/// ever contains the token.
public struct AuthFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The check that failed.
    public enum Reason: String, Sendable, CaseIterable {
        /// No `Authorization: Bearer` header, or one without a token.
        case missing
        /// Not a JWT: wrong number of parts, bad base64url, bad JSON, missing required claims.
        case malformed
        /// `exp` is in the past (beyond the leeway).
        case expired
        /// `nbf` is in the future (beyond the leeway).
        case notYetValid = "not_yet_valid"
        /// Unknown key id, an algorithm not allowed for the configured keys, or a signature that does not verify.
        case badSignature = "bad_signature"
        case wrongIssuer = "wrong_issuer"
        case wrongAudience = "wrong_audience"
        /// `role` is not `authenticated` (an `anon` or `service_role` key, for instance).
        case wrongRole = "wrong_role"
        /// `sub` is not a UUID.
        case invalidSubject = "invalid_subject"
        /// The signing keys could not be fetched yet; the token may be fine (answered 503, not 401).
        case unavailable
    }

    public let reason: Reason
    public let message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { message }
}
