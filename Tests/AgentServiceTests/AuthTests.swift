import ClaudeStub
import Foundation
import JWTKit
import SupabaseAuth
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

/// A service with auth on: JWKS from a local stand-in for Supabase Auth, and the legacy secret.
private struct AuthFixture {
    let keys: TestKeys
    let jwks: JWKSServer

    static func make(publish: [String]? = nil, up: Bool = true) async throws -> AuthFixture {
        let keys = try await TestKeys.make(ec: ["ec-1", "ec-2", "ec-rogue"], rsa: ["rsa-1"])
        let jwks = JWKSServer(document: try keys.jwks(publish ?? ["ec-1", "rsa-1"]))
        jwks.setUp(up)
        try await jwks.start()
        return AuthFixture(keys: keys, jwks: jwks)
    }

    func configure(_ configuration: inout ServiceConfiguration, secret: Bool = true) {
        configuration.supabaseURL = jwks.supabaseURL
        configuration.supabaseJWTSecret = secret ? TestKeys.secret : nil
        configuration.authUnknownKeyRefetch = .seconds(1)
    }

    func claims(_ user: UUID) -> TestClaims { TestClaims(sub: user.uuidString.lowercased(), iss: jwks.issuer) }
}

private func bearer(_ token: String) -> [String: String] { ["Authorization": "Bearer \(token)"] }

private func rowCount(_ service: ServiceHarness) async throws -> Int {
    let result = try await service.runtime.database.withConnection {
        try $0.query("SELECT (SELECT count(*) FROM threads) + (SELECT count(*) FROM turns)")
    }
    return result.int(0, 0) ?? -1
}

@Suite("Identity: verified Supabase access tokens", .timeLimit(.minutes(3)))
struct AuthTests {
    @Test("valid ES256, RS256 and HS256 tokens stream and persist for their subject; user_id may be omitted")
    func validTokens() async throws {
        let auth = try await AuthFixture.make()
        defer { Task { await auth.jwks.stop() } }
        try await ServiceHarness.run(configure: { auth.configure(&$0) }) { service in
            let user = UUID()
            let tokens = [
                try await auth.keys.es256(auth.claims(user), kid: "ec-1"),
                try await auth.keys.rs256(auth.claims(user), kid: "rsa-1"),
                try await TestKeys.hs256(auth.claims(user)),
            ]
            for (index, token) in tokens.enumerated() {
                var body: [String: any Sendable] = ["question": "question \(index)", "thread_id": "t"]
                if index == 1 { body["user_id"] = user.uuidString }  // a matching user_id is fine
                let stream = try await TestHTTP.openEventStream(port: service.port, json: body, headers: bearer(token))
                let events = await stream.all()
                #expect(stream.status == 200)
                #expect(events.last?.isDone == true)
            }
            let stored = try #require(try await service.repository.turns(userID: user, threadID: "t", limit: 10, beforeSeq: nil))
            #expect(stored.map(\.question) == ["question 0", "question 1", "question 2"])
            #expect(stored.allSatisfy { $0.status == .completed })

            let list = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads", headers: bearer(tokens[0]))
            #expect(list.status == 200)
            #expect((list.json["threads"] as? [[String: Any]])?.first?["thread_id"] as? String == "t")
            let query = try await TestHTTP.postJSON(
                port: service.port, path: "/query", json: ["question": "plain"], headers: bearer(tokens[2]))
            #expect(query.status == 200)
            // /health stays open.
            let health = try await TestHTTP.request(port: service.port, method: "GET", path: "/health")
            #expect(health.status == 200)
        }
    }

    @Test("a new key id is accepted after one refetch; an unknown one is refused and refetched at most once per interval")
    func rotation() async throws {
        let auth = try await AuthFixture.make(publish: ["ec-1"])
        defer { Task { await auth.jwks.stop() } }
        try await ServiceHarness.run(configure: {
            auth.configure(&$0)
            $0.authUnknownKeyRefetch = .seconds(3)
        }) { service in
            let user = UUID()
            #expect(auth.jwks.fetches == 1)  // prefetched at start-up
            auth.jwks.publish(try auth.keys.jwks(["ec-1", "ec-2"]))
            let rotated = try await auth.keys.es256(auth.claims(user), kid: "ec-2")
            let accepted = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads", headers: bearer(rotated))
            #expect(accepted.status == 200)
            #expect(auth.jwks.fetches == 2)

            try await Task.sleep(for: .milliseconds(3_100))
            let rogue = try await auth.keys.es256(auth.claims(user), kid: "ec-rogue")
            let port = service.port
            // Three at once: they share one refetch (or find it rate-limited), never one each.
            let refusals = try await withThrowingTaskGroup(of: TestHTTP.Response.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        try await TestHTTP.request(port: port, method: "GET", path: "/threads", headers: bearer(rogue))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for refused in refusals {
                #expect(refused.status == 401)
                #expect(((refused.json["error"] as? [String: Any])?["message"] as? String)?.contains("kid") == true)
            }
            #expect(auth.jwks.fetches == 3)  // one refetch for the three refusals
            let again = try await TestHTTP.request(port: port, method: "GET", path: "/threads", headers: bearer(rogue))
            #expect(again.status == 401)
            #expect(auth.jwks.fetches == 3)  // still rate-limited
        }
    }

    @Test("forged and broken tokens are refused with 401, the failed check named, and nothing written")
    func forgedTokens() async throws {
        let auth = try await AuthFixture.make()
        defer { Task { await auth.jwks.stop() } }
        let user = UUID()
        let good = auth.claims(user)
        let now = Int(Date().timeIntervalSince1970)
        let ecPublicPEM = try #require(auth.keys.ecKeys["ec-1"]).publicKey.pemRepresentation
        let rsaPublicPEM = try #require(auth.keys.rsaKeys["rsa-1"]).publicKey.pemRepresentation
        let valid = try await auth.keys.es256(good, kid: "ec-1")
        var other = good
        other.sub = UUID().uuidString

        func with(_ change: (inout TestClaims) -> Void) -> TestClaims {
            var claims = good
            change(&claims)
            return claims
        }
        let cases: [(name: String, header: String?, reason: String)] = [
            ("no header", nil, "missing"),
            ("Bearer without a token", "Bearer ", "missing"),
            ("Basic scheme", "Basic dXNlcjpwYXNz", "malformed"),
            ("garbage", "Bearer not-a-jwt", "malformed"),
            ("three parts of garbage", "Bearer a.b.c", "malformed"),
            ("alg none", "Bearer " + (try TestKeys.handmade(header: ["alg": "none", "typ": "JWT"], claims: good, hmacKey: nil)), "bad signature"),
            ("HS256 signed with the EC public key", "Bearer " + (try TestKeys.handmade(header: ["alg": "HS256", "typ": "JWT", "kid": "ec-1"], claims: good, hmacKey: Array(ecPublicPEM.utf8))), "bad signature"),
            ("HS256 signed with the RSA public key", "Bearer " + (try TestKeys.handmade(header: ["alg": "HS256", "typ": "JWT", "kid": "rsa-1"], claims: good, hmacKey: Array(rsaPublicPEM.utf8))), "bad signature"),
            ("ES256 header on the RSA key", "Bearer " + (try TestKeys.handmade(header: ["alg": "ES256", "kid": "rsa-1"], claims: good, hmacKey: [1])), "bad signature"),
            ("RS384 is not allowed", "Bearer " + (try TestKeys.handmade(header: ["alg": "RS384", "kid": "rsa-1"], claims: good, hmacKey: [1])), "bad signature"),
            ("tampered payload", "Bearer " + (try TestKeys.tampered(valid, claims: other)), "bad signature"),
            ("signed with another secret", "Bearer " + (try await TestKeys.hs256(good, secret: "another-secret-that-is-long-enough-too")), "bad signature"),
            ("expired", "Bearer " + (try await auth.keys.es256(with { $0.exp = now - 120 }, kid: "ec-1")), "expired"),
            ("no exp", "Bearer " + (try await auth.keys.es256(with { $0.exp = nil }, kid: "ec-1")), "malformed"),
            ("nbf in the future", "Bearer " + (try await auth.keys.es256(with { $0.nbf = now + 120 }, kid: "ec-1")), "not yet valid"),
            ("wrong iss", "Bearer " + (try await auth.keys.es256(with { $0.iss = "https://evil.example/auth/v1" }, kid: "ec-1")), "wrong issuer"),
            ("wrong aud", "Bearer " + (try await auth.keys.es256(with { $0.aud = "other" }, kid: "ec-1")), "wrong audience"),
            ("role anon", "Bearer " + (try await TestKeys.hs256(with { $0.role = "anon" })), "wrong role"),
            ("role service_role", "Bearer " + (try await TestKeys.hs256(with { $0.role = "service_role" })), "wrong role"),
            ("sub not a UUID", "Bearer " + (try await auth.keys.es256(with { $0.sub = "admin" }, kid: "ec-1")), "invalid subject"),
            ("unknown kid", "Bearer " + (try await auth.keys.es256(good, kid: "ec-rogue")), "bad signature"),
        ]
        try await ServiceHarness.run(configure: { auth.configure(&$0) }) { service in
            for testCase in cases {
                var headers: [String: String] = [:]
                if let header = testCase.header { headers["Authorization"] = header }
                let stream = try await TestHTTP.postJSON(
                    port: service.port, path: "/query_stream",
                    json: ["question": "hello", "thread_id": "forged", "user_id": user.uuidString], headers: headers)
                #expect(stream.status == 401, "\(testCase.name)")
                let error = stream.json["error"] as? [String: Any]
                #expect(error?["type"] as? String == "unauthorized", "\(testCase.name)")
                #expect((error?["message"] as? String)?.hasPrefix(testCase.reason) == true, "\(testCase.name): \(error?["message"] ?? "")")
                #expect(stream.headers["www-authenticate"] == #"Bearer error="invalid_token""#, "\(testCase.name)")
                let list = try await TestHTTP.request(port: service.port, method: "GET", path: "/threads", headers: headers)
                #expect(list.status == 401, "\(testCase.name)")
            }
            #expect(try await rowCount(service) == 0)
            let metrics = try await TestHTTP.request(port: service.port, method: "GET", path: "/metrics")
            for reason in ["missing", "malformed", "bad_signature", "expired", "not_yet_valid", "wrong_issuer", "wrong_audience", "wrong_role", "invalid_subject"] {
                #expect(metrics.text.contains(#"agent_auth_failures_total{reason="\#(reason)"}"#), "\(reason)")
            }
            // The same token, untampered, is fine: the table above failed on its checks, not on the setup.
            let accepted = try await TestHTTP.request(port: service.port, method: "GET", path: "/threads", headers: bearer(valid))
            #expect(accepted.status == 200)
        }
    }

    @Test("user A's token gets 404 on user B's thread on every endpoint; a user_id other than the token's is 403")
    func isolation() async throws {
        let auth = try await AuthFixture.make()
        defer { Task { await auth.jwks.stop() } }
        try await ServiceHarness.run(configure: { auth.configure(&$0) }) { service in
            let alice = UUID()
            let bob = UUID()
            let aliceToken = try await TestKeys.hs256(auth.claims(alice))
            let bobToken = try await auth.keys.es256(auth.claims(bob), kid: "ec-1")
            let bobs = try await TestHTTP.openEventStream(
                port: service.port, json: ["question": "bob's secret", "thread_id": "bob-thread"], headers: bearer(bobToken))
            #expect(await bobs.all().last?.isDone == true)

            let read = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/threads/bob-thread/messages", headers: bearer(aliceToken))
            #expect(read.status == 404)
            let delete = try await TestHTTP.request(
                port: service.port, method: "DELETE", path: "/threads/bob-thread", headers: bearer(aliceToken))
            #expect(delete.status == 404)
            let list = try await TestHTTP.request(port: service.port, method: "GET", path: "/threads", headers: bearer(aliceToken))
            #expect((list.json["threads"] as? [Any])?.isEmpty == true)

            // Naming Bob while holding Alice's token.
            let impersonate = try await TestHTTP.postJSON(
                port: service.port, path: "/query_stream",
                json: ["question": "hi", "thread_id": "bob-thread", "user_id": bob.uuidString], headers: bearer(aliceToken))
            #expect(impersonate.status == 403)
            #expect((impersonate.json["error"] as? [String: Any])?["type"] as? String == "forbidden")
            for path in ["/threads?user_id=\(bob.uuidString)", "/threads/bob-thread/messages?user_id=\(bob.uuidString)"] {
                let response = try await TestHTTP.request(port: service.port, method: "GET", path: path, headers: bearer(aliceToken))
                #expect(response.status == 403, "\(path)")
            }
            let deleteAsBob = try await TestHTTP.request(
                port: service.port, method: "DELETE", path: "/threads/bob-thread?user_id=\(bob.uuidString)",
                headers: bearer(aliceToken))
            #expect(deleteAsBob.status == 403)
            // Alice writing to a thread id Bob uses gets her own thread; Bob's is untouched.
            let alices = try await TestHTTP.openEventStream(
                port: service.port, json: ["question": "alice", "thread_id": "bob-thread"], headers: bearer(aliceToken))
            #expect(await alices.all().last?.isDone == true)
            let bobsTurns = try await service.repository.turns(userID: bob, threadID: "bob-thread", limit: 10, beforeSeq: nil)
            #expect(bobsTurns?.map(\.question) == ["bob's secret"])
        }
    }

    @Test("JWKS endpoint down after the first fetch: cached keys keep working; down from the start: 503 auth_unavailable")
    func jwksOutage() async throws {
        let auth = try await AuthFixture.make()
        defer { Task { await auth.jwks.stop() } }
        let user = UUID()
        try await ServiceHarness.run(configure: {
            auth.configure(&$0)
            $0.authJWKSTTL = .milliseconds(200)
        }) { service in
            auth.jwks.setUp(false)
            try await Task.sleep(for: .milliseconds(300))  // the cache is now stale; refreshes fail
            for kid in ["ec-1", "ec-1"] {
                let token = try await auth.keys.es256(auth.claims(user), kid: kid)
                let response = try await TestHTTP.request(port: service.port, method: "GET", path: "/threads", headers: bearer(token))
                #expect(response.status == 200)
                try await Task.sleep(for: .milliseconds(350))
            }
            #expect(auth.jwks.fetches >= 2)  // it did try again, and failed
        }

        let down = try await AuthFixture.make(up: false)
        defer { Task { await down.jwks.stop() } }
        try await ServiceHarness.run(configure: { down.configure(&$0) }) { service in
            let token = try await down.keys.es256(down.claims(user), kid: "ec-1")
            let refused = try await TestHTTP.postJSON(
                port: service.port, path: "/query_stream", json: ["question": "hi"], headers: bearer(token))
            #expect(refused.status == 503)
            #expect((refused.json["error"] as? [String: Any])?["type"] as? String == "auth_unavailable")
            #expect(refused.headers["retry-after"] != nil)
            #expect(try await rowCount(service) == 0)
            // The secret does not depend on the JWKS.
            let hs = try await TestKeys.hs256(down.claims(user))
            let viaSecret = try await TestHTTP.request(port: service.port, method: "GET", path: "/threads", headers: bearer(hs))
            #expect(viaSecret.status == 200)
            // Once the endpoint answers, the same token works.
            down.jwks.setUp(true)
            try await Task.sleep(for: .milliseconds(2_100))
            let accepted = try await TestHTTP.request(port: service.port, method: "GET", path: "/threads", headers: bearer(token))
            #expect(accepted.status == 200)
        }
    }

    @Test("METRICS_TOKEN protects /metrics")
    func metricsToken() async throws {
        try await ServiceHarness.run(configure: { $0.metricsToken = "metrics-token-0123456789" }) { service in
            let refused = try await TestHTTP.request(port: service.port, method: "GET", path: "/metrics")
            #expect(refused.status == 401)
            let wrong = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/metrics", headers: bearer("metrics-token-0123456788"))
            #expect(wrong.status == 401)
            let allowed = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/metrics", headers: bearer("metrics-token-0123456789"))
            #expect(allowed.status == 200)
            #expect(allowed.text.contains("agent_turns_total"))
        }
    }
}

@Suite("Identity: the binary's safe defaults and the token helper", .serialized, .timeLimit(.minutes(3)))
struct AuthBinaryTests {
    @Test("serve on 0.0.0.0 without auth refuses to start in one line, unless ALLOW_UNAUTHENTICATED=true")
    func refusesPublicAddressWithoutAuth() async throws {
        let fixture = try await BinaryFixture.make()
        let refused = try await CommandRun.run(
            ["serve"], environment: fixture.environment.merging(["HOST": "0.0.0.0", "PORT": "0"]) { $1 })
        #expect(refused.status != 0)
        let lines = refused.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(lines.first?.contains("ALLOW_UNAUTHENTICATED") == true)

        let allowed = try await ServiceProcess.start(
            environment: fixture.environment.merging([
                "HOST": "0.0.0.0", "PORT": "0", "ALLOW_UNAUTHENTICATED": "true", "LOG_LEVEL": "notice",
            ]) { $1 })
        kill(allowed.process.processIdentifier, SIGTERM)
        #expect(await allowed.waitForExit(timeout: .seconds(20)) == 0)

        // With auth configured the public address is fine.
        let withAuth = try await ServiceProcess.start(
            environment: fixture.environment.merging([
                "HOST": "0.0.0.0", "PORT": "0", "SUPABASE_JWT_SECRET": TestKeys.secret, "LOG_LEVEL": "notice",
            ]) { $1 })
        let user = UUID()
        let token = try await CommandRun.run(
            ["token", "--user", user.uuidString, "--expires-in", "600"],
            environment: ["SUPABASE_JWT_SECRET": TestKeys.secret])
        #expect(token.status == 0)
        let printed = token.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let answered = try await TestHTTP.postJSON(
            port: withAuth.port, path: "/query", json: ["question": "hello"], headers: bearer(printed))
        #expect(answered.status == 200)
        let anonymous = try await TestHTTP.postJSON(
            port: withAuth.port, path: "/query", json: ["question": "hello", "user_id": user.uuidString])
        #expect(anonymous.status == 401)
        kill(withAuth.process.processIdentifier, SIGTERM)
        #expect(await withAuth.waitForExit(timeout: .seconds(20)) == 0)
        let stored = try await fixture.repository.listThreads(userID: user, limit: 10, before: nil)
        #expect(stored.count == 1)
        await fixture.stub.stop()
        await fixture.database.close()
    }

    @Test("agent-service token prints a token the verifier accepts for that user, and fails in one line without a secret")
    func tokenCommand() async throws {
        let user = UUID()
        let run = try await CommandRun.run(
            ["token", "--user", user.uuidString.lowercased()],
            environment: ["SUPABASE_JWT_SECRET": TestKeys.secret, "SUPABASE_URL": "https://ref.supabase.co"])
        #expect(run.status == 0)
        let verifier = await TokenVerifier(
            configuration: .init(hmacSecret: Array(TestKeys.secret.utf8), issuer: "https://ref.supabase.co/auth/v1"),
            fetch: { _ in [] }, logger: .quiet)
        let verified = try await verifier.verify(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(verified.userID == user)

        let missing = try await CommandRun.run(["token", "--user", user.uuidString], environment: [:])
        #expect(missing.status == 1)
        #expect(missing.stderr.split(separator: "\n").count == 1)
        #expect(missing.stderr.contains("SUPABASE_JWT_SECRET"))
        let badUser = try await CommandRun.run(["token", "--user", "nobody"], environment: ["SUPABASE_JWT_SECRET": TestKeys.secret])
        #expect(badUser.status == 64)
    }
}
