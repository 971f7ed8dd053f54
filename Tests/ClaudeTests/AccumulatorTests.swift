import Claude
import Testing

@Suite struct AccumulatorTests {
    @Test("deltas go to their own blocks, interleaved or not, and only text blocks make the text")
    func interleavedBlocks() {
        var acc = MessageAccumulator()
        let events: [MessageStreamEvent] = [
            .contentBlockStart(index: 0, type: "text"),
            .textDelta(index: 0, text: "Let me "),
            .toolUseStart(index: 1, id: "toolu_1", name: "lookup"),
            .contentBlockStart(index: 2, type: "text"),
            .inputJSONDelta(index: 1, partialJSON: "{\"q\":"),
            .textDelta(index: 0, text: "look."),
            .textDelta(index: 2, text: " Then"),
            .inputJSONDelta(index: 1, partialJSON: "\"x\"}"),
            .textDelta(index: 1, text: " (a text delta for the tool block: ignored)"),
            .textDelta(index: 7, text: " (a block that never started, after text blocks: ignored)"),
            .textDelta(index: 2, text: " more."),
        ]
        for event in events { acc.apply(event) }
        #expect(acc.text == "Let me look. Then more.")
        #expect(
            acc.contentBlocks == [
                .text(TextBlock("Let me look.")),
                .toolUse(ToolUseBlock(id: "toolu_1", name: "lookup", input: .object(["q": .string("x")]))),
                .text(TextBlock(" Then more.")),
            ])
        #expect(acc.toolCalls.map(\.inputText) == ["{\"q\":\"x\"}"])
    }

    @Test("a text delta before any block started opens a text block (lenient)")
    func deltaWithoutStart() {
        var acc = MessageAccumulator()
        acc.apply(.textDelta(index: 0, text: "a"))
        acc.apply(.textDelta(index: 0, text: "b"))
        #expect(acc.text == "ab")
        #expect(acc.contentBlocks == [.text(TextBlock("ab"))])
    }

    @Test("thinking and its signature accumulate apart, and a long reply keeps every delta")
    func thinkingAndLongText() {
        var acc = MessageAccumulator()
        acc.apply(.contentBlockStart(index: 0, type: "thinking"))
        acc.apply(.thinkingDelta(index: 0, thinking: "hmm, "))
        acc.apply(.signatureDelta(index: 0, signature: "c2ln"))
        acc.apply(.thinkingDelta(index: 0, thinking: "yes"))
        acc.apply(.signatureDelta(index: 0, signature: "bmF0"))
        acc.apply(.contentBlockStart(index: 1, type: "text"))
        for i in 0..<20_000 { acc.apply(.textDelta(index: 1, text: "\(i % 10)")) }
        #expect(acc.thinkingText == "hmm, yes")
        guard case .thinking(let thinking)? = acc.contentBlocks.first else {
            Issue.record("no thinking block first: \(acc.contentBlocks.first.map { "\($0)" } ?? "none")")
            return
        }
        #expect(thinking.signature == "c2lnbmF0")
        #expect(acc.text.count == 20_000)
        #expect(acc.contentBlocks.last == .text(TextBlock(acc.text)))
    }
}
