import Crypto
import CryptoExtras
import Foundation
import Hummingbird
import JWTKit
import Logging
import ServiceLifecycle
import Synchronization
import TestSupport

/// Claims shaped like a Supabase access token; every field optional so tests can leave any out.
struct TestClaims: JWTPayload {
    var sub: String?
    var role: String? = "authenticated"
    var aud: String? = "authenticated"
    var iss: String?
    var exp: Int? = Int(Date().timeIntervalSince1970) + 3600
    var nbf: Int?
    var session_id: String? = UUID().uuidString

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Signing keys generated for a test, and tokens signed with them.
struct TestKeys: Sendable {
    let ecKeys: [String: ES256PrivateKey]
    let rsaKeys: [String: JWTKit.Insecure.RSA.PrivateKey]
    static let secret = "test-jwt-secret-with-at-least-32-characters!"

    /// Generating an RSA key takes a second or more in a debug build: it runs off the cooperative pool.
    static func make(ec: [String], rsa: [String]) async throws -> TestKeys {
        try await onThread { try makeBlocking(ec: ec, rsa: rsa) }
    }

    /// RSA keys by kid, generated once per process (each fixture still gets fresh EC keys).
    private static let generatedRSA = Mutex<[String: JWTKit.Insecure.RSA.PrivateKey]>([:])

    private static func makeBlocking(ec: [String], rsa: [String]) throws -> TestKeys {
        var ecKeys: [String: ES256PrivateKey] = [:]
        for kid in ec { ecKeys[kid] = try ES256PrivateKey(backing: P256.Signing.PrivateKey()) }
        var rsaKeys: [String: JWTKit.Insecure.RSA.PrivateKey] = [:]
        for kid in rsa {
            if let known = generatedRSA.withLock({ $0[kid] }) {
                rsaKeys[kid] = known
                continue
            }
            let key = try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
            generatedRSA.withLock { $0[kid] = key }
            rsaKeys[kid] = key
        }
        return TestKeys(ecKeys: ecKeys, rsaKeys: rsaKeys)
    }

    /// A JWKS document with the public halves of `kids` (all keys when nil).
    func jwks(_ kids: [String]? = nil) throws -> String {
        var keys: [[String: String]] = []
        for (kid, key) in ecKeys.sorted(by: { $0.key < $1.key }) where kids?.contains(kid) ?? true {
            let parameters = try unwrap(key.parameters)
            keys.append(["kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": parameters.x, "y": parameters.y])
        }
        for (kid, key) in rsaKeys.sorted(by: { $0.key < $1.key }) where kids?.contains(kid) ?? true {
            let primitives = try key.publicKey.getKeyPrimitives()
            keys.append([
                "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": Self.base64URL(primitives.modulus),
                "e": Self.base64URL(primitives.publicExponent),
            ])
        }
        let data = try JSONSerialization.data(withJSONObject: ["keys": keys])
        return String(decoding: data, as: UTF8.self)
    }

    func es256(_ claims: TestClaims, kid: String) async throws -> String {
        let collection = JWTKeyCollection()
        let key: ES256PrivateKey = try unwrap(ecKeys[kid])
        await collection.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        return try await collection.sign(claims, kid: JWKIdentifier(string: kid))
    }

    func rs256(_ claims: TestClaims, kid: String) async throws -> String {
        let collection = JWTKeyCollection()
        let key: JWTKit.Insecure.RSA.PrivateKey = try unwrap(rsaKeys[kid])
        await collection.add(rsa: key, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        return try await collection.sign(claims, kid: JWKIdentifier(string: kid))
    }

    static func hs256(_ claims: TestClaims, secret: String = TestKeys.secret) async throws -> String {
        let collection = JWTKeyCollection()
        await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await collection.sign(claims)
    }

    /// A token assembled by hand: any header, any claims, an HMAC-SHA256 signature with `hmacKey` or none at all.
    static func handmade(header: [String: String], claims: TestClaims, hmacKey: [UInt8]?) throws -> String {
        let headerPart = base64URL(try JSONSerialization.data(withJSONObject: header))
        let payloadPart = base64URL(try JSONEncoder().encode(claims))
        let input = "\(headerPart).\(payloadPart)"
        guard let hmacKey else { return input + "." }
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: hmacKey))
        return input + "." + base64URL(Data(mac))
    }

    /// `token` with its payload replaced by `claims`, the signature kept.
    static func tampered(_ token: String, claims: TestClaims) throws -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return "\(parts[0]).\(base64URL(try JSONEncoder().encode(claims))).\(parts[2])"
    }

    static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// A local Supabase Auth stand-in that publishes a JWKS at `/auth/v1/.well-known/jwks.json` and can be taken down.
final class JWKSServer: Sendable {
    private struct State {
        var document: String
        var up = true
    }

    private let state: Mutex<State>
    private let fetchCount = Atomic<Int>(0)
    private let task: Mutex<Task<Void, any Error>?> = Mutex(nil)
    private let boundPort = Atomic<Int>(0)
    var port: Int { boundPort.load(ordering: .relaxed) }

    init(document: String) {
        state = Mutex(State(document: document))
    }

    /// `SUPABASE_URL` for this server.
    var supabaseURL: String { "http://127.0.0.1:\(port)" }
    var issuer: String { "\(supabaseURL)/auth/v1" }
    var fetches: Int { fetchCount.load(ordering: .relaxed) }

    func publish(_ document: String) { state.withLock { $0.document = document } }

    /// Down: every fetch gets 503, as a failing Auth server would answer.
    func setUp(_ up: Bool) { state.withLock { $0.up = up } }

    func start() async throws {
        let router = Router()
        router.get("/auth/v1/.well-known/jwks.json") { _, _ -> Response in
            self.fetchCount.add(1, ordering: .relaxed)
            let (document, up) = self.state.withLock { ($0.document, $0.up) }
            guard up else { return Response(status: .serviceUnavailable) }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: document)))
        }
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "jwks")
        logger.logLevel = .error
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        task.withLock { $0 = Task { try await app.runService() } }
        var iterator = ports.makeAsyncIterator()
        boundPort.store(await iterator.next() ?? 0, ordering: .relaxed)
    }

    func stop() async {
        let running = task.withLock { $0 }
        running?.cancel()
        _ = try? await running?.value
    }
}

func unwrap<T>(_ value: T?, _ what: String = "value") throws -> T {
    guard let value else { throw HarnessError("missing \(what)") }
    return value
}
