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
    @Test("stream events read through JSONValue: escapes, surrogate pairs, padding, unknown fields, wrong types")
    func wireEvents() throws {
        let text = #"{"type": "content_block_delta" , "index":1.0,"delta":{"type":"text_delta","text":"\u00e9\ud83c\udf0d \"q\"\n","extra":[1,{"a":null}]}   }"#
        let delta = try #require(WireEvent(try JSONValue(parsing: text)))
        #expect(delta.type == "content_block_delta" && delta.index == 1)
        #expect(delta.delta?.type == "text_delta" && delta.delta?.text == "é🌍 \"q\"\n")
        let start = try #require(
            WireEvent(
                try JSONValue(
                    parsing: #"{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":12,"output_tokens":"x"}}}"#)))
        #expect(start.message?.id == "msg_1" && start.message?.usage?.input_tokens == 12)
        #expect(start.message?.usage?.output_tokens == nil)
        #expect(WireEvent(try JSONValue(parsing: #"{"index":0}"#)) == nil)
        #expect(WireEvent(try JSONValue(parsing: #"[1,2]"#)) == nil)
        let error = try #require(
            WireEvent(
                try JSONValue(
                    parsing: #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded","details":{"error_code":"c"}},"request_id":"r"}"#)))
        #expect(error.error?.type == "overloaded_error" && error.error?.details?.error_code == "c" && error.request_id == "r")
    }
}
