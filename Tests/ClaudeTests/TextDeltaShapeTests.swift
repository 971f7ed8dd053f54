import Foundation
import PropertyBased
import Testing

@testable import Claude

/// The text-delta fast path must give exactly what the full parser gives, or step aside (nil).
@Suite struct TextDeltaShapeTests {
    /// What the full parser and `WireEvent` make of `data`: the block index and text of a text delta, else nil.
    private func full(_ data: String) -> (index: Int, text: String)? {
        guard let json = try? JSONValue(parsing: data), let wire = WireEvent(json),
            wire.type == "content_block_delta", wire.delta?.type == "text_delta"
        else { return nil }
        return (wire.index ?? 0, wire.delta?.text ?? "")
    }

    private func event(index: String = "0", text: String) -> String {
        #"{"type":"content_block_delta","index":"# + index + #","delta":{"type":"text_delta","text":"# + text + "}}"
    }

    @Test("the API's own text deltas are read exactly as the full parser reads them")
    func sameAsFullParser() throws {
        let texts = [
            #""Hello""#, #""""#, #"" there! How can I help?""#, #""a\"b\\c\/d\n\t\r\b\f""#, #""\u00e9\u4e2d""#,
            #""\ud83d\ude00 emoji""#, #""naïve café 中文 😀""#, #""}}""#, #""\"}}""#,
        ]
        for text in texts {
            for index in ["0", "1", "12", "123456789"] {
                let data = event(index: index, text: text)
                let fast = try #require(TextDeltaShape.match(data), "\(data)")
                let slow = try #require(full(data))
                #expect(fast.index == slow.index && fast.text == slow.text, "\(data)")
            }
        }
    }

    @Test("anything not exactly that shape is left to the full parser")
    func othersStepAside() {
        let others = [
            event(index: "01", text: #""x""#),  // not valid JSON
            event(index: "-1", text: #""x""#),
            event(index: "1234567890", text: #""x""#),
            event(text: #""x"#),  // unterminated
            event(text: #""\ud83d""#),  // a lone surrogate: invalid
            event(text: #""a\qb""#),  // a bad escape
            event(text: "\"a\u{01}b\""),  // a raw control character
            event(text: #""x","extra":1"#),
            event(text: #""x"} "#),
            #"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            #"{"type": "content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#,
            #"{"index":0,"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#,
            #"{"type":"message_stop"}"#, "", "{}",
        ]
        for data in others { #expect(TextDeltaShape.match(data) == nil, "\(data)") }
    }

    @Test("any text, encoded as JSON, reads back the same on both paths")
    func anyText() async {
        await propertyCheck(count: 300, input: Gen.character(in: "\u{00}"..."\u{D7FF}").string(of: 0...40)) { text in
            let encoded = String(decoding: try! JSONEncoder().encode(text), as: UTF8.self)
            let data = event(index: "3", text: encoded)
            let fast = TextDeltaShape.match(data)
            #expect(fast?.index == 3 && fast?.text == text)
            #expect(full(data)?.text == text)
        }
    }
}
