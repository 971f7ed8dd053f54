import Foundation

/// A compact JWS split into its parts, decoded but not yet trusted.
struct TokenParts {
    let header: [String: Any]
    let claims: [String: Any]
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    let signingInput: ArraySlice<UInt8>
    let signature: [UInt8]

    /// Tokens longer than this are refused before any decoding (Supabase's are well under 2 KiB).
    static let maximumLength = 16 * 1024

    init(_ token: String) throws(AuthFailure) {
        let bytes = Array(token.utf8)
        guard bytes.count <= Self.maximumLength else { throw AuthFailure(.malformed, "malformed: the token is too long") }
        let dots = bytes.indices.filter { bytes[$0] == UInt8(ascii: ".") }
        guard dots.count == 2 else {
            throw AuthFailure(.malformed, "malformed: not a JWT (expected three dot-separated parts)")
        }
        let headerBytes = bytes[..<dots[0]]
        let payloadBytes = bytes[(dots[0] + 1)..<dots[1]]
        let signatureBytes = bytes[(dots[1] + 1)...]
        guard let header = Self.decode(headerBytes).flatMap(Self.object) else {
            throw AuthFailure(.malformed, "malformed: the JWT header is not base64url-encoded JSON")
        }
        guard let claims = Self.decode(payloadBytes).flatMap(Self.object) else {
            throw AuthFailure(.malformed, "malformed: the JWT payload is not base64url-encoded JSON")
        }
        guard let signature = Self.decode(signatureBytes) else {
            throw AuthFailure(.malformed, "malformed: the JWT signature is not base64url")
        }
        self.header = header
        self.claims = claims
        self.signingInput = bytes[..<dots[1]]
        self.signature = signature
    }

    private static func object(_ data: [UInt8]) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any]
    }

    /// Unpadded base64url (RFC 7515 §2); nil on any other character.
    static func decode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        var standard = [UInt8]()
        standard.reserveCapacity(text.count + 3)
        for byte in text {
            switch byte {
            case UInt8(ascii: "-"): standard.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): standard.append(UInt8(ascii: "/"))
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                standard.append(byte)
            default: return nil
            }
        }
        if standard.count % 4 == 1 { return nil }
        while standard.count % 4 != 0 { standard.append(UInt8(ascii: "=")) }
        return Data(base64Encoded: Data(standard)).map(Array.init)
    }
}
