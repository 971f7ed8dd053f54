import Claude
import Foundation
import PropertyBased
import Testing

private func decode(_ chunks: [[UInt8]], dispatchEventsWithoutData: Bool = false) -> [SSEEvent] {
    var decoder = SSEDecoder(dispatchEventsWithoutData: dispatchEventsWithoutData)
    var events: [SSEEvent] = []
    for chunk in chunks { events += decoder.feed(chunk) }
    decoder.finish()
    return events
}

private func decode(_ chunks: [String], dispatchEventsWithoutData: Bool = false) -> [SSEEvent] {
    decode(chunks.map { Array($0.utf8) }, dispatchEventsWithoutData: dispatchEventsWithoutData)
}

private func json(_ s: String) -> NSDictionary? {
    (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? NSDictionary
}

@Suite struct SSEDecoderSDKVectorTests {
    @Test("PY 1: event and data lines in separate chunks make one named event")
    func namedEvent() {
        let events = decode(["event: completion\n", "data: {\"foo\":true}\n", "\n"])
        #expect(events.count == 1)
        #expect(events.first?.event == "completion")
        #expect(json(events[0].data) == ["foo": true])
    }

    @Test("PY 2: data without an event line has no event name")
    func dataWithoutEvent() {
        let events = decode(["data: {\"foo\":true}\n", "\n"])
        #expect(events.map(\.event) == [nil])
        #expect(json(events[0].data) == ["foo": true])
    }

    @Test("PY 3: an event without data is dispatched with empty data in SDK mode, not in WHATWG mode")
    func eventWithoutData() {
        #expect(
            decode(["event: ping\n", "\n"], dispatchEventsWithoutData: true) == [SSEEvent(event: "ping", data: "")])
        #expect(decode(["event: ping\n", "\n"]).isEmpty)
    }

    @Test("PY 4: two data-less events in SDK mode")
    func twoEventsWithoutData() {
        let events = decode(["event: ping\n", "\n", "event: completion\n", "\n"], dispatchEventsWithoutData: true)
        #expect(events == [SSEEvent(event: "ping", data: ""), SSEEvent(event: "completion", data: "")])
    }

    @Test("PY 5: two events each keep their own JSON")
    func twoEvents() {
        let events = decode(["event: a\ndata: {\"n\":1}\n\nevent: b\ndata: {\"n\":2}\n\n"])
        #expect(events.map(\.event) == ["a", "b"])
        #expect(events.map { json($0.data) } == [["n": 1], ["n": 2]])
    }

    @Test("PY 6: multi-line data joins with LF, keeps empty data lines, one space stripped")
    func multiLineData() {
        let events = decode([
            "event: ping\n", "data: {\n", "data: \"foo\":\n", "data: \n", "data:\n", "data: true}\n", "\n\n",
        ])
        #expect(events.count == 1)
        #expect(events[0].data == "{\n\"foo\":\n\n\ntrue}")
        #expect(json(events[0].data) == ["foo": true])
    }

    @Test("PY 7: escaped \\n inside JSON is not a line break, LF arriving in the next chunk")
    func escapedNewlines() {
        let events = decode(["data: {\"content\":\"a\\n\\nb\"}", "\n\n"])
        #expect(events.count == 1)
        #expect((json(events[0].data)?["content"] as? String) == "a\n\nb")
    }

    @Test("PY 8: multi-line data without blank lines between")
    func multiLineNoBlank() {
        let events = decode(["data: {\"a\":\ndata: 1,\ndata: \"b\": 2}\n\n"])
        #expect(json(events[0].data) == ["a": 1, "b": 2])
    }

    @Test("PY 9: U+2028 inside a JSON string is not a line terminator")
    func lineSeparator() {
        let events = decode(["data: {\"a\":1}\n\n", "data: {\"t\":\"x\u{2028}y\"}\n\n", "data: {\"a\":3}\n\n"])
        #expect(events.count == 3)
        #expect((json(events[1].data)?["t"] as? String) == "x\u{2028}y")
    }

    @Test("PY 9 (TS variant): U+2028 bytes as their own chunk")
    func lineSeparatorOwnChunk() {
        let chunks: [[UInt8]] = [Array("data: {\"t\":\"x".utf8), [0xE2, 0x80, 0xA8], Array("y\"}\n\n".utf8)]
        let events = decode(chunks)
        #expect(events.count == 1)
        #expect((json(events[0].data)?["t"] as? String) == "x\u{2028}y")
    }

    @Test("PY 10: multi-byte characters split across chunks reassemble")
    func splitUTF8() {
        let chunks: [[UInt8]] = [
            Array("data: {\"content\":\"".utf8), [0xD0], [0xB8, 0xD0, 0xB7, 0xD0],
            [0xB2, 0xD0, 0xB5, 0xD1, 0x81, 0xD1, 0x82, 0xD0, 0xBD, 0xD0, 0xB8], Array("\"}\n".utf8), Array("\n".utf8),
        ]
        let events = decode(chunks)
        #expect((json(events[0].data)?["content"] as? String) == "известни")
    }

    @Test("PY 11: an error event keeps its name and typed body")
    func errorEvent() {
        let events = decode([
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
        ])
        #expect(events.first?.event == "error")
        #expect(((json(events[0].data)?["error"] as? NSDictionary)?["type"] as? String) == "overloaded_error")
    }
}

@Suite struct SSELineSplitterTests {
    private func lines(_ chunks: [String], flush: Bool) -> [String] {
        var splitter = SSELineSplitter()
        var out: [String] = []
        for chunk in chunks { out += splitter.feed(Array(chunk.utf8)).map { String(decoding: $0, as: UTF8.self) } }
        if flush, let last = splitter.flush() { out.append(String(decoding: last, as: UTF8.self)) }
        return out
    }

    @Test("TS: a partial line is held until its terminator, flushed at the end")
    func heldPartial() {
        #expect(lines(["foo", " bar\nbaz"], flush: false) == ["foo bar"])
        #expect(lines(["foo", " bar\r\nbaz"], flush: false) == ["foo bar"])
        #expect(lines(["foo", " bar\nbaz"], flush: true) == ["foo bar", "baz"])
    }

    @Test("TS: pieces join across several chunks")
    func joins() {
        #expect(lines(["foo", " bar", "baz\n", "thing\n"], flush: false) == ["foo barbaz", "thing"])
        #expect(lines(["foo", " bar", "baz\r\n", "thing\r\n"], flush: false) == ["foo barbaz", "thing"])
    }

    @Test("TS: escaped backslash-n text is not split")
    func escaped() {
        #expect(lines(["foo\\nbar\\r\\nbaz\n"], flush: false) == ["foo\\nbar\\r\\nbaz"])
    }

    @Test("TS: a CRLF split across chunks is one terminator; a lone CR is a terminator")
    func splitCRLF() {
        #expect(lines(["foo\r", "\n", "bar"], flush: true) == ["foo", "bar"])
        #expect(lines(["foo\r", "bar"], flush: true) == ["foo", "bar"])
        #expect(lines(["foo\r", "\r", "bar"], flush: true) == ["foo", "", "bar"])
        // TS holds the last CR's line until the next byte; we emit it at once (same lines, no added latency for
        // CR-terminated events) and only remember to swallow an LF that may follow.
        #expect(lines(["foo\r", "\r"], flush: false) == ["foo", ""])
        #expect(lines(["foo\r", "\r", "\r", "\n", "bar", "\n"], flush: false) == ["foo", "", "", "bar"])
        #expect(lines(["foo\n", "\n", "\n", "bar", "\n"], flush: false) == ["foo", "", "", "bar"])
    }

    @Test("TS: foo LF LF bar in any chunking")
    func anyChunking() {
        let bytes = Array("foo\n\nbar".utf8)
        for cut in 0...bytes.count {
            let chunks = [
                String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self),
            ]
            #expect(lines(chunks, flush: true) == ["foo", "", "bar"])
        }
    }

    @Test("TS: Cyrillic bytes in three chunks emit nothing until LF")
    func cyrillic() {
        var splitter = SSELineSplitter()
        let bytes = Array("известни".utf8)
        #expect(splitter.feed(Array(bytes[0..<3])).isEmpty)
        #expect(splitter.feed(Array(bytes[3..<9])).isEmpty)
        let out = splitter.feed(Array(bytes[9...]) + [0x0A])
        #expect(out.map { String(decoding: $0, as: UTF8.self) } == ["известни"])
    }

    @Test("TS: flushing an empty splitter yields nothing")
    func emptyFlush() {
        var splitter = SSELineSplitter()
        #expect(splitter.flush() == nil)
    }
}

@Suite struct SSEDecoderWHATWGTests {
    @Test("comments are ignored")
    func comments() {
        #expect(decode([": hello\n: ping\ndata: x\n: mid\n\n"]) == [SSEEvent(data: "x")])
    }

    @Test("a leading UTF-8 BOM is stripped, even split across chunks")
    func bom() {
        #expect(decode([[0xEF, 0xBB], [0xBF] + Array("data: x\n\n".utf8)]) == [SSEEvent(data: "x")])
        #expect(
            decode([[0xEF, 0xBB, 0xBF] + Array("event: e\ndata: y\n\n".utf8)]) == [SSEEvent(event: "e", data: "y")])
    }

    @Test("id persists across events and is ignored if it contains NUL; retry takes only digits")
    func idAndRetry() {
        var decoder = SSEDecoder()
        let events = decoder.feed(
            Array(
                "id: 1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nretry: 12a\nretry: 2500\ndata: d\n\nretry: x\n\n"
                    .utf8))
        #expect(events.map(\.id) == ["1", "1", "1", "1"])
        #expect(decoder.reconnectionTimeMilliseconds == 2500)
    }

    @Test("a field without a colon is a field with an empty value")
    func fieldWithoutColon() {
        #expect(decode(["data\ndata\n\n"]) == [SSEEvent(data: "\n")])
        #expect(decode(["event\ndata: z\n\n"]) == [SSEEvent(event: "", data: "z")])
    }

    @Test("data:x keeps x, data:  x keeps one space")
    func spaces() {
        #expect(decode(["data:x\n\n"]) == [SSEEvent(data: "x")])
        #expect(decode(["data:  x\n\n"]) == [SSEEvent(data: " x")])
    }

    @Test("unknown fields are ignored")
    func unknownFields() {
        #expect(decode(["foo: bar\ndata: x\nbaz\n\n"]) == [SSEEvent(data: "x")])
    }

    @Test("CR-only streams decode like LF streams")
    func crOnly() {
        #expect(
            decode(["event: a\rdata: 1\r\revent: b\r", "data: 2\r", "\r"]) == [
                SSEEvent(event: "a", data: "1"), SSEEvent(event: "b", data: "2"),
            ])
    }

    @Test("an unterminated final event at EOF is discarded")
    func unterminated() {
        #expect(decode(["data: a\n\ndata: b\n"]) == [SSEEvent(data: "a")])
        #expect(decode(["data: a\n\ndata: b"]) == [SSEEvent(data: "a")])
    }

    @Test("whitespace-padded JSON parses")
    func paddedJSON() {
        let events = decode(["event: message_stop\ndata: {\"type\":\"message_stop\"       }\n\n"])
        #expect(json(events[0].data) == ["type": "message_stop"])
    }

    @Test("an empty data block is not dispatched")
    func emptyBlock() {
        #expect(decode(["\n\n\nevent: x\n\ndata: y\n\n"]) == [SSEEvent(data: "y")])
    }
}

@Suite struct SSEDecoderPropertyTests {
    static let stream: [UInt8] = {
        var s = "\u{FEFF}: comment\r\nevent: message_start\r\ndata: {\"a\": \"héllo wörld 日本語 🎉\"}\r\n\r\n"
        s += "id: 7\nevent: content_block_delta\ndata: {\"t\":\"x\u{2028}y\"}   \ndata: second\n\n"
        s += "event: ping\rdata: {\"type\": \"ping\"}\r\r"
        s += "retry: 100\ndata\n\nevent: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n"
        return Array(s.utf8)
    }()

    @Test("any split of a valid byte stream into chunks yields exactly the events of the unsplit stream")
    func anySplit() async {
        let whole = decode([Self.stream])
        #expect(whole.count == 5)
        await propertyCheck(count: 300, input: Gen.int(in: 1...12).array(of: 0...80)) { sizes in
            var chunks: [[UInt8]] = []
            var index = 0
            for size in sizes where index < Self.stream.count {
                let end = min(Self.stream.count, index + size)
                chunks.append(Array(Self.stream[index..<end]))
                index = end
            }
            if index < Self.stream.count { chunks.append(Array(Self.stream[index...])) }
            #expect(decode(chunks) == whole)
        }
    }
}
