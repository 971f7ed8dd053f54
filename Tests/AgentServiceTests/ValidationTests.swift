import ClaudeStub
import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

@Suite("Bad input gets a 4xx JSON error naming the problem, and writes nothing", .timeLimit(.minutes(3)))
struct ValidationTests {
    struct BadRequest: Sendable, CustomTestStringConvertible {
        var name: String
        var body: [UInt8]
        var contentType: String? = "application/json"
        var headers: [String: String] = [:]
        var status: Int
        var field: String?
        var testDescription: String { name }
    }

    static let user = "0b0c7e55-6f7e-4d8a-9a43-3c1e2d4f5a6b"

    static func json(_ text: String) -> [UInt8] { Array(text.utf8) }

    static let cases: [BadRequest] = [
        BadRequest(name: "malformed JSON", body: json(#"{"question": "hi", "user_id": "#), status: 400),
        BadRequest(name: "not an object", body: json(#"["hi"]"#), status: 400),
        BadRequest(name: "empty body", body: [], status: 400),
        BadRequest(
            name: "invalid UTF-8",
            body: Array(#"{"question": "hi "#.utf8) + [0xC3, 0x28] + Array(#"", "user_id": "\#(user)"}"#.utf8),
            status: 400),
        BadRequest(name: "missing question", body: json(#"{"user_id": "\#(user)"}"#), status: 400, field: "question"),
        BadRequest(name: "missing user_id", body: json(#"{"question": "hi"}"#), status: 400, field: "user_id"),
        BadRequest(
            name: "question not a string", body: json(#"{"question": 42, "user_id": "\#(user)"}"#), status: 400,
            field: "question"),
        BadRequest(
            name: "non-UUID user_id", body: json(#"{"question": "hi", "user_id": "alice"}"#), status: 400,
            field: "user_id"),
        BadRequest(
            name: "unknown time zone",
            body: json(#"{"question": "hi", "user_id": "\#(user)", "user_timezone": "Mars/Olympus_Mons"}"#),
            status: 400,
            field: "user_timezone"),
        BadRequest(
            name: "empty question", body: json(#"{"question": "", "user_id": "\#(user)"}"#), status: 400,
            field: "question"),
        BadRequest(
            name: "blank question", body: json(#"{"question": "  \n\t ", "user_id": "\#(user)"}"#), status: 400,
            field: "question"),
        BadRequest(
            name: "oversized question",
            body: json(#"{"question": "\#(String(repeating: "a", count: 40_000))", "user_id": "\#(user)"}"#),
            status: 400,
            field: "question"),
        BadRequest(
            name: "NUL byte", body: json(#"{"question": "a\u0000b", "user_id": "\#(user)"}"#), status: 400,
            field: "question"),
        BadRequest(
            name: "oversized body",
            body: json(
                #"{"question": "hi", "user_id": "\#(user)", "padding": "\#(String(repeating: "x", count: 300_000))"}"#),
            status: 413),
        BadRequest(
            name: "over-long thread_id",
            body: json(
                #"{"question": "hi", "user_id": "\#(user)", "thread_id": "\#(String(repeating: "t", count: 129))"}"#),
            status: 400, field: "thread_id"),
        BadRequest(
            name: "odd thread_id",
            body: json(#"{"question": "hi", "user_id": "\#(user)", "thread_id": "../etc/passwd"}"#),
            status: 400, field: "thread_id"),
        BadRequest(
            name: "thread_id not a string", body: json(#"{"question": "hi", "user_id": "\#(user)", "thread_id": 7}"#),
            status: 400, field: "thread_id"),
        BadRequest(
            name: "form-encoded body", body: json("question=hi"), contentType: "application/x-www-form-urlencoded",
            status: 415),
        BadRequest(
            name: "text/plain body (a browser's preflight-free cross-site POST)",
            body: json(#"{"question": "hi", "user_id": "\#(user)"}"#), contentType: "text/plain", status: 415),
        BadRequest(
            name: "no Content-Type", body: json(#"{"question": "hi", "user_id": "\#(user)"}"#), contentType: nil,
            status: 415),
        BadRequest(
            name: "duplicate user_id key",
            body: json(#"{"question": "hi", "user_id": "\#(user)", "user_id": "\#(UUID().uuidString)"}"#),
            status: 400, field: "user_id"),
        BadRequest(
            name: "duplicate key spelled with an escape",
            body: json(#"{"question": "hi", "user_id": "\#(user)", "user\u005fid": "\#(user)"}"#),
            status: 400, field: "user_id"),
        BadRequest(
            name: "thread_id .", body: json(#"{"question": "hi", "user_id": "\#(user)", "thread_id": "."}"#),
            status: 400, field: "thread_id"),
        BadRequest(
            name: "thread_id ..", body: json(#"{"question": "hi", "user_id": "\#(user)", "thread_id": ".."}"#),
            status: 400, field: "thread_id"),
        BadRequest(
            name: "bad Idempotency-Key", body: json(#"{"question": "hi", "user_id": "\#(user)"}"#),
            headers: ["Idempotency-Key": "has space"], status: 400, field: "Idempotency-Key"),
    ]

    @Test("every bad request is rejected before anything is stored", arguments: ["/query_stream", "/query"])
    func badRequests(path: String) async throws {
        try await ServiceHarness.run { service in
            for testCase in Self.cases {
                var headers = testCase.headers
                if let contentType = testCase.contentType { headers["Content-Type"] = contentType }
                let response = try await TestHTTP.request(
                    port: service.port, method: "POST", path: path, headers: headers, body: testCase.body)
                #expect(response.status == testCase.status, "\(testCase.name): status \(response.status)")
                #expect(response.headers["content-type"]?.hasPrefix("application/json") == true, "\(testCase.name)")
                let error = response.json["error"] as? [String: Any]
                #expect(error?["type"] is String, "\(testCase.name): \(response.text)")
                #expect((error?["message"] as? String)?.isEmpty == false, "\(testCase.name)")
                if let field = testCase.field {
                    #expect(error?["field"] as? String == field, "\(testCase.name): \(response.text)")
                }
            }
            let threads = try await service.repository.listThreads(
                userID: UUID(uuidString: Self.user)!, limit: 10, before: nil)
            #expect(threads.isEmpty, "a rejected request wrote a thread")
            #expect(service.stub.receivedRequests.isEmpty, "a rejected request reached Claude")
        }
    }

    @Test("unknown paths are JSON 404s and wrong methods are JSON 405s with Allow")
    func routing() async throws {
        try await ServiceHarness.run { service in
            let missing = try await TestHTTP.request(port: service.port, method: "GET", path: "/nope")
            #expect(missing.status == 404)
            #expect((missing.json["error"] as? [String: Any])?["type"] as? String == "not_found")
            let wrong = try await TestHTTP.request(port: service.port, method: "GET", path: "/query_stream")
            #expect(wrong.status == 405)
            #expect(wrong.headers["allow"]?.contains("POST") == true)
            #expect((wrong.json["error"] as? [String: Any])?["type"] as? String == "method_not_allowed")
        }
    }

    @Test("CORS: allowed origins get headers and preflight; others get none")
    func cors() async throws {
        try await ServiceHarness.run(configure: { $0.corsAllowedOrigins = ["https://app.example"] }) { service in
            let preflight = try await TestHTTP.request(
                port: service.port, method: "OPTIONS", path: "/query_stream",
                headers: [
                    "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type",
                ])
            #expect(preflight.status == 204)
            #expect(preflight.headers["access-control-allow-origin"] == "https://app.example")
            #expect(preflight.headers["access-control-allow-methods"]?.contains("POST") == true)
            let other = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/health", headers: ["Origin": "https://evil.example"])
            #expect(other.headers["access-control-allow-origin"] == nil)
            let allowed = try await TestHTTP.request(
                port: service.port, method: "GET", path: "/health", headers: ["Origin": "https://app.example"])
            #expect(allowed.headers["access-control-allow-origin"] == "https://app.example")
        }
    }
}
