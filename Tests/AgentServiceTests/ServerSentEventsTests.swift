import Foundation
import NIOCore
import Testing

@testable import AgentService

@Suite("SSE frames")
struct ServerSentEventsTests {
    /// Texts whose every byte class the escaper treats differently, alone and mixed with plain runs.
    static let texts = [
        "", "plain ASCII run", "quote \" backslash \\ slash /", "new\nline\rreturn\ttab", "\u{0}\u{1}\u{1F}\u{7F}",
        "héllo wörld 日本語 🎉", "line \u{2028} and paragraph \u{2029} separators", "euro € and ellipsis …",
        "\u{2028}", "ends with an escape\n", "\"", "\u{2029}\u{2028}x\u{1}",
    ]

    @Test("a chunk frame is one id line and one data line whose JSON holds the text exactly", arguments: texts)
    func chunkFrameRoundTrips(text: String) throws {
        let frame = ServerSentEvents.frame(
            for: .chunk(text, end: 1_234_567), threadID: "t", turnID: UUID(), turnKey: "key")
        let raw = String(buffer: frame)
        #expect(raw.hasPrefix("id: key:1234567\ndata: "))
        #expect(raw.hasSuffix("}\n\n"))
        // JavaScript's line parsing breaks on raw U+2028/U+2029, and SSE's on raw CR/LF: none survives unescaped.
        let data = raw.dropFirst("id: key:1234567\ndata: ".count).dropLast(2)
        #expect(!data.contains("\u{2028}") && !data.contains("\u{2029}") && !data.contains("\n") && !data.contains("\r"))
        let object = try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: String]
        #expect(object == ["chunk": text])
    }

    @Test("the escapes are JSON's short forms where it has them, \\u00XX for other controls, \\u2028 and \\u2029")
    func escapesAreCanonical() {
        #expect(ServerSentEvents.quoted("a\"b\\c\nd\re\tf") == #""a\"b\\c\nd\re\tf""#)
        #expect(ServerSentEvents.quoted("\u{0}\u{1F}") == #""\u0000\u001f""#)
        #expect(ServerSentEvents.quoted("x\u{2028}y\u{2029}z") == #""x\u2028y\u2029z""#)
        // Other three-byte characters starting with E2 pass through untouched.
        #expect(ServerSentEvents.quoted("€…") == "\"€…\"")
    }

    @Test("offsets are written in decimal", arguments: [0, 7, 10, 99, 100, 65_535, 1_000_000_007, Int(Int32.max)])
    func decimal(value: Int) {
        var buffer = ByteBuffer()
        ServerSentEvents.writeDecimal(value, into: &buffer)
        #expect(String(buffer: buffer) == String(value))
    }
}
