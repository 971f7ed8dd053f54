public import Foundation
import JWTKit
public import Logging

/// Verifies Supabase Auth access tokens: signature, algorithm, time window, issuer, audience, role and subject.
///
/// Keys come from how the project is configured, and each fixes the algorithms it may verify:
/// - the project's JWKS (`$SUPABASE_URL/auth/v1/.well-known/jwks.json`): ES256 (P-256) and RS256 keys, chosen by the
///   token's `kid`;
/// - the legacy JWT secret: HS256 only, its raw bytes as the HMAC key.
/// `none`, other algorithms, and a JWKS key offered as an HMAC secret never verify. The checks run in a fixed order
/// (structure, signature, then claims), so a forged token is always reported as a bad signature, never as expired.
///
/// ```swift
/// let verifier = await TokenVerifier(
///     configuration: .init(jwksURL: "https://ref.supabase.co/auth/v1/.well-known/jwks.json",
///                          issuer: "https://ref.supabase.co/auth/v1"),
///     fetch: { url in try await download(url) }, logger: logger)
/// let user = try await verifier.verify(token).userID
/// ```
public final class TokenVerifier: Sendable {
    /// What a token must satisfy, and where its keys come from.
    public struct Configuration: Sendable {
        /// The JWKS URL; nil when the project verifies with the legacy secret only.
        public var jwksURL: String?
        /// The legacy JWT secret's bytes (HS256); nil when not configured.
        public var hmacSecret: [UInt8]?
        /// Expected `iss`; nil skips the check (only possible with the secret alone, see the README).
        public var issuer: String?
        /// Expected `aud` (a string, or one of an array).
        public var audience: String
        /// Required `role`.
        public var role: String
        /// Clock skew tolerated on `exp` and `nbf` (at most 30 s).
        public var leeway: Duration
        /// How long fetched keys count as fresh (at most 10 minutes).
        public var jwksTTL: Duration
        /// Shortest time between two refetches caused by an unknown `kid`.
        public var unknownKeyRefetchInterval: Duration
        /// Shortest time between two fetches while no key was ever fetched.
        public var failedFetchRetryInterval: Duration

        /// Creates a configuration.
        public init(
            jwksURL: String? = nil, hmacSecret: [UInt8]? = nil, issuer: String? = nil,
            audience: String = "authenticated", role: String = "authenticated", leeway: Duration = .seconds(30),
            jwksTTL: Duration = .seconds(300), unknownKeyRefetchInterval: Duration = .seconds(30),
            failedFetchRetryInterval: Duration = .seconds(2)
        ) {
            self.jwksURL = jwksURL
            self.hmacSecret = hmacSecret
            self.issuer = issuer
            self.audience = audience
            self.role = role
            self.leeway = min(leeway, .seconds(30))
            self.jwksTTL = min(jwksTTL, .seconds(600))
            self.unknownKeyRefetchInterval = unknownKeyRefetchInterval
            self.failedFetchRetryInterval = failedFetchRetryInterval
        }
    }

    /// Downloads a URL's body (the service passes its libcurl client).
    public typealias Fetch = @Sendable (String) async throws -> [UInt8]

    public let configuration: Configuration
    private let hmac: (any JWTAlgorithm)?
    private let jwks: JWKSCache?

    /// Creates a verifier; nothing is fetched until `prefetch()` or the first token that needs the JWKS.
    public init(configuration: Configuration, fetch: @escaping Fetch, logger: Logger) async {
        self.configuration = configuration
        if let secret = configuration.hmacSecret {
            let collection = JWTKeyCollection()
            await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            hmac = try? await collection.getKey()
        } else {
            hmac = nil
        }
        jwks = configuration.jwksURL.map {
            JWKSCache(
                url: $0, ttl: configuration.jwksTTL, unknownKeyRefetchInterval: configuration.unknownKeyRefetchInterval,
                failedFetchRetryInterval: configuration.failedFetchRetryInterval, fetch: fetch, logger: logger)
        }
    }

    /// Loads the JWKS now (at start-up), so the first request does not wait for it. Failures are logged, not thrown.
    public func prefetch() async {
        await jwks?.refresh()
    }

    /// JWKS fetches started so far.
    public var jwksFetches: Int { jwks?.fetches ?? 0 }

    /// Verifies `token` (the part after `Bearer `).
    ///
    /// - Throws: `AuthFailure` naming the failed check; `.unavailable` when the JWKS was never fetched.
    public func verify(_ token: String, now: Date = Date()) async throws(AuthFailure) -> VerifiedToken {
        guard !token.isEmpty else { throw AuthFailure(.missing, "missing: the bearer token is empty") }
        let parts = try TokenParts(token)
        let algorithm = try await key(for: parts.header)
        let verified: Bool
        do {
            verified = try algorithm.verify(parts.signature, signs: parts.signingInput)
        } catch {
            verified = false
        }
        guard verified else { throw AuthFailure(.badSignature, "bad signature: the token's signature does not verify") }
        return try checkClaims(parts.claims, now: now)
    }

    private func key(for header: [String: Any]) async throws(AuthFailure) -> any JWTAlgorithm {
        guard let alg = header["alg"] as? String else {
            throw AuthFailure(.malformed, "malformed: the JWT header has no alg")
        }
        switch alg {
        case "HS256":
            guard let hmac else {
                throw AuthFailure(
                    .badSignature, "bad signature: HS256 is not accepted (no JWT secret is configured; use ES256/RS256)")
            }
            return hmac
        case "ES256", "RS256":
            guard let jwks else {
                throw AuthFailure(
                    .badSignature, "bad signature: \(alg) is not accepted (no JWKS is configured; HS256 only)")
            }
            guard let kid = header["kid"] as? String, !kid.isEmpty else {
                throw AuthFailure(.badSignature, "bad signature: an \(alg) token must name its key (kid)")
            }
            let key = try await jwks.key(for: kid)
            guard key.name == alg else {
                throw AuthFailure(.badSignature, "bad signature: key \(kid) is a \(key.name) key, not \(alg)")
            }
            return key.algorithm
        default:
            throw AuthFailure(.badSignature, "bad signature: algorithm '\(alg.prefix(16))' is not accepted")
        }
    }

    private func checkClaims(_ claims: [String: Any], now: Date) throws(AuthFailure) -> VerifiedToken {
        let leeway = Double(configuration.leeway.components.seconds)
        let current = now.timeIntervalSince1970
        guard let exp = Self.number(claims["exp"]) else {
            throw AuthFailure(.malformed, "malformed: the token has no numeric exp claim")
        }
        guard current <= exp + leeway else {
            throw AuthFailure(.expired, "expired: the token expired \(Int(current - exp)) s ago; refresh the session")
        }
        if let value = claims["nbf"] {
            guard let nbf = Self.number(value) else {
                throw AuthFailure(.malformed, "malformed: the nbf claim is not a number")
            }
            guard current + leeway >= nbf else {
                throw AuthFailure(.notYetValid, "not yet valid: the token's nbf is \(Int(nbf - current)) s in the future")
            }
        }
        if let issuer = configuration.issuer {
            guard let iss = claims["iss"] as? String, iss == issuer else {
                throw AuthFailure(.wrongIssuer, "wrong issuer: the token was not issued by \(issuer)")
            }
        }
        let audiences: [String]
        switch claims["aud"] {
        case let single as String: audiences = [single]
        case let many as [Any]: audiences = many.compactMap { $0 as? String }
        default: audiences = []
        }
        guard audiences.contains(configuration.audience) else {
            throw AuthFailure(.wrongAudience, "wrong audience: the token is not for '\(configuration.audience)'")
        }
        guard let role = claims["role"] as? String, role == configuration.role else {
            throw AuthFailure(
                .wrongRole, "wrong role: only signed-in users' tokens (role \(configuration.role)) are accepted")
        }
        guard let sub = claims["sub"] as? String, sub.utf8.count == 36, let user = UUID(uuidString: sub) else {
            throw AuthFailure(.invalidSubject, "invalid subject: the token's sub is not a user id (UUID)")
        }
        return VerifiedToken(
            userID: user, role: role, expiresAt: Date(timeIntervalSince1970: exp),
            sessionID: claims["session_id"] as? String, isAnonymous: claims["is_anonymous"] as? Bool ?? false)
    }

    private static func number(_ value: Any?) -> Double? {
        if value is Bool { return nil }
        if let integer = value as? Int { return Double(integer) }
        return value as? Double
    }
}
