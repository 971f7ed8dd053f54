import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

@Suite("Hardening: safe browser defaults and query-parameter edge cases", .timeLimit(.minutes(3)))
struct BrowserSafetyTests {
    static let app = "https://app.example"

    @Test("error responses to an allowed origin carry the CORS headers (400, 404, 405, 409, 413, 415, 429)")
    func corsOnErrors() async throws {
        try await ServiceHarness.run(
            // Replies of 8 s: both must still run when the last request below arrives, even on a loaded machine.
            stub: StubConfiguration(deltaInterval: .milliseconds(100), deltaCount: 80),
            configure: {
                $0.corsAllowedOrigins = [Self.app]
                $0.maxActiveTurnsPerUser = 2
                $0.maxBodyBytes = 1_024
            }
        ) { service in
            let user = UUID()
            let origin = ["Origin": Self.app]
            let running = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("long", user: user, thread: "t"), headers: origin)
            #expect(running.headers["access-control-allow-origin"] == Self.app)
            var responses: [(String, TestHTTP.Response)] = []
            responses.append(("409", try await TestHTTP.postJSON(port: service.port, path: "/query", json: ServiceHarness.body("busy", user: user, thread: "t"), headers: origin)))
            let second = try await TestHTTP.openEventStream(
                port: service.port, json: ServiceHarness.body("long too", user: user, thread: "u"), headers: origin)
            responses.append(("400", try await TestHTTP.postJSON(port: service.port, path: "/query", json: ["question": ""], headers: origin)))
            responses.append(("404", try await TestHTTP.request(port: service.port, method: "GET", path: "/threads/none/messages?user_id=\(user)", headers: origin)))
            responses.append(("404 route", try await TestHTTP.request(port: service.port, method: "GET", path: "/nope", headers: origin)))
            responses.append(("405", try await TestHTTP.request(port: service.port, method: "GET", path: "/query", headers: origin)))
            responses.append(("413", try await TestHTTP.postJSON(port: service.port, path: "/query", json: ["question": String(repeating: "x", count: 2_000)], headers: origin)))
            responses.append(("415", try await TestHTTP.request(port: service.port, method: "POST", path: "/query", headers: origin.merging(["Content-Type": "application/xml"]) { $1 }, body: Array("<q/>".utf8))))
            responses.append(("429", try await TestHTTP.postJSON(port: service.port, path: "/query", json: ServiceHarness.body("again", user: user, thread: "v"), headers: origin)))
            for (name, response) in responses {
                #expect(response.status == Int(name.prefix(3)), "\(name): \(response.status)")
                #expect(response.headers["access-control-allow-origin"] == Self.app, "\(name): \(response.status)")
                #expect(response.headers["x-content-type-options"] == "nosniff", "\(name)")
            }
            _ = await running.all()
            _ = await second.all()
        }
    }

    @Test("a write from a foreign Origin is refused with 403 before it runs; reads get no CORS headers")
    func noCrossSiteWrites() async throws {
        try await ServiceHarness.run(configure: { $0.corsAllowedOrigins = [Self.app] }) { service in
            let user = UUID()
            let evil = ["Origin": "https://evil.example"]
            let post = try await TestHTTP.postJSON(
                port: service.port, path: "/query_stream", json: ServiceHarness.body("hi", user: user, thread: "t"),
                headers: evil)
            #expect(post.status == 403)
            #expect((post.json["error"] as? [String: Any])?["type"] as? String == "forbidden_origin")
            // The browser's "simple" form of the same attack.
            let simple = try await TestHTTP.request(
                port: service.port, method: "POST", path: "/query",
                headers: evil.merging(["Content-Type": "text/plain"]) { $1 },
                body: Array(#"{"question": "hi", "user_id": "\#(user.uuidString)"}"#.utf8))
            #expect(simple.status == 403)
            _ = try await service.streamTurn("mine", user: user, thread: "keep")
            let delete = try await TestHTTP.request(
                port: service.port, method: "DELETE", path: "/threads/keep?user_id=\(user)", headers: evil)
            #expect(delete.status == 403)
            let threads = try await service.repository.listThreads(userID: user, limit: 10, before: nil)
            #expect(threads.map(\.id) == ["keep"])
            #expect(service.stub.receivedRequests.count == 1)
            // Without Origin (curl, a server) and from the allowed origin, writes work.
            let fromApp = try await TestHTTP.postJSON(
                port: service.port, path: "/query", json: ServiceHarness.body("hi", user: user, thread: "app"),
                headers: ["Origin": Self.app])
            #expect(fromApp.status == 200)
        }
    }

    @Test("a write from the service's own origin (the page at /) passes without being listed; another port does not")
    func sameOriginWrites() async throws {
        try await ServiceHarness.run(configure: { $0.corsAllowedOrigins = [Self.app] }) { service in
            let user = UUID()
            // The test client sends `Host: 127.0.0.1`, so this is the origin a page served here would send.
            let own = try await TestHTTP.postJSON(
                port: service.port, path: "/query", json: ServiceHarness.body("hi", user: user, thread: "own"),
                headers: ["Origin": "http://127.0.0.1"])
            #expect(own.status == 200, "\(own.text)")
            #expect(own.headers["access-control-allow-origin"] == nil)
            let cancel = try await TestHTTP.request(
                port: service.port, method: "POST", path: "/threads/own/cancel?user_id=\(user)",
                headers: ["Origin": "https://127.0.0.1"])
            #expect(cancel.status == 409)  // past the origin check: nothing runs
            for origin in ["http://127.0.0.1:1", "http://127.0.0.1.evil.example", "null", "ftp://127.0.0.1"] {
                let delete = try await TestHTTP.request(
                    port: service.port, method: "DELETE", path: "/threads/own?user_id=\(user)",
                    headers: ["Origin": origin])
                #expect(delete.status == 403, "\(origin): \(delete.status)")
            }
            let threads = try await service.repository.listThreads(userID: user, limit: 10, before: nil)
            #expect(threads.map(\.id) == ["own"])
        }
    }

    @Test("the page at / is embedded, typed, no-cache, nosniff and under a strict CSP; WEB_UI=false makes / a 404")
    func referencePage() async throws {
        try await ServiceHarness.run { service in
            let page = try await TestHTTP.request(port: service.port, method: "GET", path: "/")
            #expect(page.status == 200)
            #expect(page.headers["content-type"] == "text/html; charset=utf-8")
            #expect(page.headers["cache-control"] == "no-cache")
            #expect(page.headers["x-content-type-options"] == "nosniff")
            let csp = page.headers["content-security-policy"] ?? ""
            let directives = [
                "default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'",
            ]
            for directive in directives {
                #expect(csp.contains(directive), "\(csp)")
            }
            #expect(!csp.contains("unsafe-inline"))
            #expect(page.text.contains("<script type=\"module\" src=\"/app.js\">"))
            let script = try await TestHTTP.request(port: service.port, method: "GET", path: "/app.js")
            #expect(script.headers["content-type"] == "text/javascript; charset=utf-8")
            let style = try await TestHTTP.request(port: service.port, method: "GET", path: "/style.css")
            #expect(style.headers["content-type"] == "text/css; charset=utf-8")
            let config = try await TestHTTP.request(port: service.port, method: "GET", path: "/config.json")
            #expect(config.json["auth"] as? String == "development")
            #expect(config.json["api_base"] as? String == "")
            let post = try await TestHTTP.request(port: service.port, method: "POST", path: "/")
            #expect(post.status == 405)
        }
        try await ServiceHarness.run(configure: { $0.webUI = false }) { service in
            for path in ["/", "/app.js", "/config.json"] {
                let response = try await TestHTTP.request(port: service.port, method: "GET", path: path)
                #expect(response.status == 404, "\(path)")
                #expect((response.json["error"] as? [String: Any])?["type"] as? String == "not_found", "\(path)")
            }
        }
        var configuration = ServiceConfiguration()
        configuration.supabaseURL = "https://project.supabase.co"
        configuration.supabaseAnonKey = "sb_publishable_0123456789abcdef"
        let web = WebUI(configuration: configuration)
        #expect(web.contentSecurityPolicy().contains("connect-src 'self' https://project.supabase.co;"))
        let json = try JSONSerialization.jsonObject(with: web.configJSON()) as? [String: Any] ?? [:]
        #expect(json["auth"] as? String == "supabase")
        #expect(json["supabase_url"] as? String == "https://project.supabase.co")
        #expect(json["supabase_anon_key"] as? String == "sb_publishable_0123456789abcdef")
    }

    @Test("JSON responses carrying chat text are no-store and nosniff; the stream is too")
    func noStoreNoSniff() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let (stream, _) = try await service.streamTurn("hello", user: user, thread: "t")
            #expect(stream.headers["x-content-type-options"] == "nosniff")
            #expect(stream.headers["cache-control"]?.contains("no-store") == true)
            for path in ["/threads?user_id=\(user)", "/threads/t/messages?user_id=\(user)"] {
                let response = try await TestHTTP.request(port: service.port, method: "GET", path: path)
                #expect(response.headers["cache-control"] == "no-store", "\(path)")
                #expect(response.headers["x-content-type-options"] == "nosniff", "\(path)")
            }
        }
    }

    @Test("out-of-range query parameters are 400s naming them, never a database error")
    func queryParameters() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            _ = try await service.streamTurn("hello", user: user, thread: "t")
            let cases: [(String, String)] = [
                ("/threads/t/messages?user_id=\(user)&before=3000000000", "before"),
                ("/threads/t/messages?user_id=\(user)&before=0", "before"),
                ("/threads/t/messages?user_id=\(user)&before=-5", "before"),
                ("/threads/t/messages?user_id=\(user)&limit=0", "limit"),
                ("/threads/t/messages?user_id=\(user)&limit=101", "limit"),
                ("/threads/t/messages?user_id=\(user)&limit=99999999999999999999", "limit"),
                ("/threads?user_id=\(user)&before=99999-01-01T00:00:00Z", "before"),
                ("/threads?user_id=\(user)&before=1900-01-01T00:00:00Z", "before"),
                ("/threads?user_id=\(user)&before=yesterday", "before"),
                ("/threads/..?user_id=\(user)", "thread_id"),
                ("/threads/./messages?user_id=\(user)", "thread_id"),
                ("/threads?user_id=not-a-uuid", "user_id"),
            ]
            for (path, field) in cases {
                let response = try await TestHTTP.request(port: service.port, method: path.hasPrefix("/threads/..") ? "DELETE" : "GET", path: path)
                #expect(response.status == 400, "\(path): \(response.status) \(response.text)")
                #expect((response.json["error"] as? [String: Any])?["field"] as? String == field, "\(path)")
            }
            let threads = try await service.repository.listThreads(userID: user, limit: 10, before: nil)
            #expect(threads.count == 1)
        }
    }
}
