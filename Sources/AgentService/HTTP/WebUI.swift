import Foundation
import HTTPTypes
import Hummingbird

/// The reference chat page (`Web/`, compiled into the binary by the `EmbedWebAssets` plugin) and `/config.json`, which
/// tells the page how to sign in.
///
/// Every asset is served with `Cache-Control: no-cache` (the browser revalidates, so a new binary's page is never
/// mixed with an old script), `nosniff`, and a Content-Security-Policy that allows only this origin's scripts and
/// styles, no inline script, no framing, and network access to this origin (plus Supabase Auth when auth is on):
/// reply text the page renders can never load or run anything.
struct WebUI: Sendable {
    let configuration: ServiceConfiguration

    /// The paths this serves and their methods, for 405 answers (none when `WEB_UI=false`: everything is a 404).
    static func routes(_ configuration: ServiceConfiguration) -> [(pattern: [String], methods: [String])] {
        guard configuration.webUI else { return [] }
        return ([[], ["config.json"]] + BundledWebAssets.files.map { [$0.fileName] }).map { ($0, ["GET"]) }
    }

    /// Adds the page's routes to `router` (nothing when `WEB_UI=false`).
    func register(on router: Router<AgentRequestContext>) {
        guard configuration.webUI else { return }
        let headers = securityHeaders()
        for file in BundledWebAssets.files {
            let response = Self.response(
                Data(file.text.utf8), contentType: Self.contentType(of: file.fileName), headers: headers)
            router.get(RouterPath(file.fileName)) { _, _ in response }
            if file.fileName == "index.html" { router.get("/") { _, _ in response } }
        }
        let config = Self.response(configJSON(), contentType: "application/json; charset=utf-8", headers: headers)
        router.get("config.json") { _, _ in config }
    }

    /// What the page needs to know: where the API is (this origin) and how users sign in.
    func configJSON() -> Data {
        let object: [String: Any] = [
            "api_base": "",
            "auth": configuration.authEnabled ? "supabase" : "development",
            "supabase_url": configuration.supabaseURL as Any? ?? NSNull(),
            "supabase_anon_key": configuration.supabaseAnonKey as Any? ?? NSNull(),
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
    }

    /// The Content-Security-Policy of every page response.
    func contentSecurityPolicy() -> String {
        let connect = ["'self'"] + (configuration.authEnabled ? [configuration.supabaseURL].compactMap { $0 } : [])
        return [
            "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
            "connect-src \(connect.joined(separator: " "))", "object-src 'none'", "base-uri 'none'",
            "form-action 'self'", "frame-ancestors 'none'",
        ].joined(separator: "; ")
    }

    private func securityHeaders() -> HTTPFields {
        [
            .cacheControl: "no-cache", .xContentTypeOptions: "nosniff",
            .contentSecurityPolicy: contentSecurityPolicy(), .referrerPolicy: "no-referrer",
        ]
    }

    static func contentType(of fileName: String) -> String {
        switch (fileName as NSString).pathExtension {
        case "html": "text/html; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "svg": "image/svg+xml"
        default: "application/octet-stream"
        }
    }

    private static func response(_ data: Data, contentType: String, headers: HTTPFields) -> Response {
        var fields = headers
        fields[.contentType] = contentType
        fields[.contentLength] = String(data.count)
        return Response(status: .ok, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension HTTPField.Name {
    static let referrerPolicy = Self("Referrer-Policy")!
}
