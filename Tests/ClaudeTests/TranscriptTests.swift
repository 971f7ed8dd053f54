import Foundation
import Testing

@testable import Claude

@Suite("JSON values and stored transcripts")
struct TranscriptTests {
    @Test("canonical text ignores spacing and key order and keeps numbers as written")
    func canonical() throws {
        let streamed = try JSONValue(parsing: #"{"b": [1, 2.50, -3e2], "a": {"y": null, "x": true}, "s": "h\u00e9\"\n"}"#)
        // What Postgres returns for the same jsonb: other spacing and key order.
        let fromJSONB = try JSONValue(parsing: #"{"a": {"x": true, "y": null}, "b": [1, 2.50, -3e2], "s": "hé\"\n"}"#)
        #expect(streamed.canonicalText == #"{"a":{"x":true,"y":null},"b":[1,2.50,-3e2],"s":"hé\"\n"}"#)
        #expect(streamed.canonicalText == fromJSONB.canonicalText)
        #expect(try JSONValue(parsing: streamed.canonicalText) == streamed)
    }

    @Test("invalid JSON is refused with a position", arguments: [
        #"{"a": tru"#, #"{"a" 1}"#, "[1,]", "01", #""\ud800""#, "{} x", "",
    ])
    func invalid(_ text: String) {
        #expect(throws: JSONValueError.self) { try JSONValue(parsing: text) }
    }

    @Test("a transcript round-trips through any equivalent JSON to the same bytes")
    func transcriptRoundTrip() throws {
        let messages = [
            MessageParam(
                role: .assistant,
                blocks: [
                    .thinking(ThinkingBlock(thinking: "hmm", signature: "sig==")),
                    .text(TextBlock("Checking.")),
                    .toolUse(ToolUseBlock(id: "toolu_1", name: "time__now", input: .object(["tz": .string("UTC")]))),
                ]),
            MessageParam(
                role: .user, blocks: [.toolResult(ToolResultBlock(toolUseID: "toolu_1", content: "12:00", isError: true))]),
            MessageParam(role: .assistant, blocks: [.redactedThinking(data: "opaque"), .text(TextBlock("Noon."))]),
        ]
        let text = Transcript.encode(messages)
        #expect(try Transcript.decode(text) == messages)
        // Re-spaced as jsonb prints it: decoding and encoding again gives the original bytes.
        let respaced = text.replacingOccurrences(of: "\",\"", with: "\", \"").replacingOccurrences(of: "\":", with: "\": ")
        #expect(Transcript.encode(try Transcript.decode(respaced)) == text)
    }
}
