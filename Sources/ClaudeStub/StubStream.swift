import Dispatch
import Hummingbird
import NIOCore

/// Writes one streamed reply according to a scenario.
struct StreamPlan: Sendable {
    let scenario: StubScenario
    let configuration: StubConfiguration
    let pieces: [String]
    let model: String
    let messageID: String
    let usage: (input: Int, creation: Int, read: Int)
    /// When the request arrived (monotonic ns), stamped on the first delta as `[rx:…]` with `embedTimestamps`.
    let receivedAt: UInt64

    struct Reset: Error {}

    func write(to writer: inout any ResponseBodyWriter, holdOpen: @Sendable () async -> Void) async throws {
        let wire = StubWire(
            lineEnding: scenario.lineEnding, padJSON: scenario.padJSON ?? configuration.padJSON,
            comments: scenario.comments
        )
        let firstDelay = scenario.firstDeltaDelay ?? configuration.firstDeltaDelay
        let interval = scenario.deltaInterval ?? configuration.deltaInterval
        let pingEvery = scenario.pingEvery ?? configuration.pingEvery
        let chunking = scenario.chunkSizes

        func send(_ event: String, _ json: String) async throws {
            let bytes = wire.frame(event, json)
            guard let chunking else {
                try await writer.write(ByteBuffer(bytes: bytes))
                return
            }
            var i = 0
            while i < bytes.count {
                let n = min(Int.random(in: chunking), bytes.count - i)
                try await writer.write(ByteBuffer(bytes: bytes[i..<(i + n)]))
                i += n
            }
        }

        let startUsage = StubWire.usage(
            input: usage.input, output: 1, cacheCreation: usage.creation, cacheRead: usage.read)
        try await send("message_start", StubWire.messageStart(id: messageID, model: model, usage: startUsage))

        if case .blocks(let blocks) = scenario.behavior {
            try await writeBlocks(blocks, send: send, firstDelay: firstDelay, interval: interval)
            return
        }

        var textIndex = 0
        var stopReason = scenario.stopReason
        if case .multiBlock = scenario.behavior {
            try await send(
                "content_block_start",
                StubWire.blockStart(0, "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}"))
            try await send(
                "content_block_delta", StubWire.delta(0, "{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}"))
            try await send(
                "content_block_delta", StubWire.delta(0, "{\"type\":\"thinking_delta\",\"thinking\":\" about it.\"}"))
            try await send(
                "content_block_delta",
                StubWire.delta(0, "{\"type\":\"signature_delta\",\"signature\":\"c2lnbmF0dXJl\"}"))
            try await send("content_block_stop", StubWire.blockStop(0))
            textIndex = 1
            stopReason = "tool_use"
        }
        try await send("content_block_start", StubWire.blockStart(textIndex, "{\"type\":\"text\",\"text\":\"\"}"))
        if pingEvery != nil { try await send("ping", StubWire.ping) }
        if firstDelay > .zero { try await Task.sleep(for: firstDelay) }

        for (i, piece) in pieces.enumerated() {
            switch scenario.behavior {
            case .midStreamError(let after, let type) where i == after:
                try await send("error", StubWire.error(type: type, message: "Overloaded", requestID: nil))
                return
            case .truncate(let after) where i == after:
                return
            case .truncateByReset(let after) where i == after:
                throw Reset()
            case .stall(let after) where i == after:
                await holdOpen()
                return
            default:
                break
            }
            if i > 0 && interval > .zero { try await Task.sleep(for: interval) }
            if let pingEvery, pingEvery > 0, i > 0, i % pingEvery == 0 { try await send("ping", StubWire.ping) }
            var text = piece
            if configuration.embedTimestamps {
                text = "[ts:\(DispatchTime.now().uptimeNanoseconds)]" + text
                if i == 0 { text = "[rx:\(receivedAt)]" + text }
            }
            try await send("content_block_delta", StubWire.textDelta(textIndex, text))
        }
        try await send("content_block_stop", StubWire.blockStop(textIndex))
        if case .multiBlock = scenario.behavior {
            try await send(
                "content_block_start",
                StubWire.blockStart(2, "{\"type\":\"tool_use\",\"id\":\"toolu_stub\",\"name\":\"lookup\",\"input\":{}}")
            )
            for part in ["", "{\\\"query\\\": ", "\\\"stub\\\"}"] {
                try await send(
                    "content_block_delta",
                    StubWire.delta(2, "{\"type\":\"input_json_delta\",\"partial_json\":\"\(part)\"}"))
            }
            try await send("content_block_stop", StubWire.blockStop(2))
        }
        let endUsage = StubWire.usage(
            input: usage.input, output: pieces.count, cacheCreation: usage.creation, cacheRead: usage.read)
        try await send(
            "message_delta",
            StubWire.messageDelta(stopReason: stopReason, stopSequence: scenario.stopSequence, usage: endUsage))
        try await send("message_stop", StubWire.messageStop)
        if case .holdOpenAfterStop = scenario.behavior {
            await holdOpen()
        }
    }

    /// A scripted multi-block reply: each block started, streamed in deltas and stopped; then the stop reason.
    private func writeBlocks(
        _ blocks: [StubBlock], send: (String, String) async throws -> Void, firstDelay: Duration, interval: Duration
    ) async throws {
        if firstDelay > .zero { try await Task.sleep(for: firstDelay) }
        var deltas = 0
        func delta(_ index: Int, _ json: String) async throws {
            if deltas > 0 && interval > .zero { try await Task.sleep(for: interval) }
            deltas += 1
            try await send("content_block_delta", StubWire.delta(index, json))
        }
        let cut = scenario.cutInToolInput
        for (index, block) in blocks.enumerated() {
            switch block {
            case .text(let text):
                try await send("content_block_start", StubWire.blockStart(index, "{\"type\":\"text\",\"text\":\"\"}"))
                for word in StubWire.words(text) {
                    var word = word
                    if configuration.embedTimestamps {
                        word = "[ts:\(DispatchTime.now().uptimeNanoseconds)]" + word
                        if deltas == 0 { word = "[rx:\(receivedAt)]" + word }
                    }
                    try await delta(index, "{\"type\":\"text_delta\",\"text\":\(StubWire.string(word))}")
                }
            case .thinking(let text):
                try await send(
                    "content_block_start",
                    StubWire.blockStart(index, "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}"))
                for word in StubWire.words(text) {
                    try await delta(index, "{\"type\":\"thinking_delta\",\"thinking\":\(StubWire.string(word))}")
                }
                try await delta(
                    index,
                    "{\"type\":\"signature_delta\",\"signature\":\(StubWire.string(StubSignature.sign(text)))}")
            case .redactedThinking(let data):
                try await send(
                    "content_block_start",
                    StubWire.blockStart(index, "{\"type\":\"redacted_thinking\",\"data\":\(StubWire.string(data))}"))
            case .toolUse(let id, let name, let input):
                try await send(
                    "content_block_start",
                    StubWire.blockStart(
                        index,
                        "{\"type\":\"tool_use\",\"id\":\(StubWire.string(id)),\"name\":\(StubWire.string(name)),\"input\":{}}"))
                let fragments = StubWire.inputFragments(input)
                for (i, fragment) in fragments.enumerated() {
                    if cut && i > 0 && i >= fragments.count / 2 { return }
                    try await delta(
                        index, "{\"type\":\"input_json_delta\",\"partial_json\":\(StubWire.string(fragment))}")
                }
                if cut { return }
            }
            try await send("content_block_stop", StubWire.blockStop(index))
        }
        let endUsage = StubWire.usage(
            input: usage.input, output: max(deltas, 1), cacheCreation: usage.creation, cacheRead: usage.read)
        try await send(
            "message_delta",
            StubWire.messageDelta(stopReason: scenario.stopReason, stopSequence: scenario.stopSequence, usage: endUsage))
        try await send("message_stop", StubWire.messageStop)
    }
}
