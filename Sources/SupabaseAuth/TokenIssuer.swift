public import Foundation
import JWTKit

/// Signs HS256 access tokens shaped like Supabase Auth's, with the legacy JWT secret: for development and the
/// README's curl examples (`agent-service token`), and for tests and benchmarks.
public enum TokenIssuer {
    struct Claims: JWTPayload {
        var sub: String
        var role: String
        var aud: String
        var iss: String?
        var iat: Int
        var exp: Int
        var session_id: String
        var is_anonymous: Bool

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// An HS256 token for `userID`, valid for `expiresIn`.
    public static func hs256(
        secret: [UInt8], userID: UUID, issuer: String?, audience: String = "authenticated",
        role: String = "authenticated", expiresIn: Duration = .seconds(3600), now: Date = Date()
    ) async throws -> String {
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        let issued = Int(now.timeIntervalSince1970)
        return try await collection.sign(
            Claims(
                sub: userID.uuidString.lowercased(), role: role, aud: audience, iss: issuer, iat: issued,
                exp: issued + Int(expiresIn.components.seconds), session_id: UUID().uuidString.lowercased(),
                is_anonymous: false))
    }
}
