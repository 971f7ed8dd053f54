import ArgumentParser
import CryptoExtras
import Foundation
import JWTKit
import Logging
import SupabaseAuth

/// `agent-bench auth`: what verifying one access token costs, per algorithm.
struct AuthBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth",
        abstract: "Measure access-token verification per request (µs, median and p99) for HS256, ES256 and RS256.",
        discussion: """
            Keys are generated in process and the JWKS is served from memory, so this is the cost on the request \
            path once the keys are cached: parsing, signature, claims. Verifications run one after another on one \
            task; a rejected token (bad signature) is measured too.
            """
    )

    @Option(help: "Verifications per case.")
    var iterations = 20_000

    struct Claims: JWTPayload {
        var sub: String
        var role = "authenticated"
        var aud = "authenticated"
        var iss = "https://bench.supabase.co/auth/v1"
        var exp = Int(Date().timeIntervalSince1970) + 3600
        var session_id = UUID().uuidString
        var is_anonymous = false
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    func run() async throws {
        var logger = Logger(label: "agent-bench.auth")
        logger.logLevel = .warning
        let secret = "bench-secret-with-at-least-thirty-two-characters"
        let ec = ES256PrivateKey()
        let rsa = try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        let ecParameters = ec.parameters!
        let rsaPrimitives = try rsa.publicKey.getKeyPrimitives()
        func b64(_ data: Data) -> String {
            data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let jwks = """
            {"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"ec","x":"\(ecParameters.x)","y":"\(ecParameters.y)"},\
            {"kty":"RSA","alg":"RS256","kid":"rsa","n":"\(b64(rsaPrimitives.modulus))","e":"\(b64(rsaPrimitives.publicExponent))"}]}
            """
        let verifier = await TokenVerifier(
            configuration: .init(
                jwksURL: "memory:jwks", hmacSecret: Array(secret.utf8), issuer: "https://bench.supabase.co/auth/v1"),
            fetch: { _ in Array(jwks.utf8) }, logger: logger)
        await verifier.prefetch()

        let claims = Claims(sub: UUID().uuidString.lowercased())
        let signer = JWTKeyCollection()
        await signer.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: "hs")
        await signer.add(ecdsa: ec, kid: "ec")
        await signer.add(rsa: rsa, digestAlgorithm: .sha256, kid: "rsa")
        let hs = try await signer.sign(claims, kid: "hs")
        let es = try await signer.sign(claims, kid: "ec")
        let rs = try await signer.sign(claims, kid: "rsa")
        var forged = Array(es.utf8)
        forged[forged.count - 3] = forged[forged.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")

        print("agent-bench auth: \(iterations) verifications per case, one task, keys cached")
        print("case                         median µs    p99 µs    verifications/s")
        for (name, token) in [
            ("HS256 (legacy secret)", hs), ("ES256 (JWKS, P-256)", es), ("RS256 (JWKS, 2048-bit)", rs),
            ("ES256 bad signature", String(decoding: forged, as: UTF8.self)),
        ] {
            var samples: [Double] = []
            samples.reserveCapacity(iterations)
            let clock = ContinuousClock()
            let total = clock.now
            for _ in 0..<iterations {
                let start = clock.now
                _ = try? await verifier.verify(token)
                let elapsed = clock.now - start
                samples.append(Double(elapsed.components.attoseconds) / 1e12 + Double(elapsed.components.seconds) * 1e6)
            }
            let wall = clock.now - total
            samples.sort()
            let median = samples[samples.count / 2]
            let p99 = samples[min(samples.count - 1, samples.count * 99 / 100)]
            let seconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
            print(
                name.padding(toLength: 28, withPad: " ", startingAt: 0)
                    + String(format: "%9.1f %9.1f %14.0f", median, p99, Double(iterations) / seconds))
        }
    }
}
