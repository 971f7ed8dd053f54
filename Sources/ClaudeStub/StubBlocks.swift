import Foundation

/// One content block of a scripted reply (``StubScenario/blocks(_:stopReason:)``).
public enum StubBlock: Sendable, Hashable {
    /// A text block, streamed one `text_delta` per word.
    case text(String)
    /// A `tool_use` block; `input` is the JSON text streamed in `input_json_delta` fragments of 1 to 5 characters
    /// (it is sent as given, so a test can send input that is not valid JSON). An empty `id` is filled in as
    /// `toolu_stub_<request>_<n>`.
    case toolUse(id: String, name: String, input: String)
    /// A `thinking` block, streamed one `thinking_delta` per word, then a `signature_delta` of
    /// ``StubSignature/sign(_:)`` of the text (the stub checks it when the block comes back).
    case thinking(String)
    /// A `redacted_thinking` block with the given opaque data.
    case redactedThinking(data: String)

    var isToolUse: Bool {
        if case .toolUse = self { return true }
        return false
    }
}

/// The signatures the stub puts on thinking blocks, so tests can check they come back intact.
public enum StubSignature {
    /// `stubsig_` and the FNV-1a 64-bit hash of the text's UTF-8, in hex.
    public static func sign(_ thinking: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in thinking.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return "stubsig_" + String(repeating: "0", count: 16 - hex.count) + hex
    }
}

extension StubRequest {
    /// The first way in which the request breaks the API's rules for tool use and thinking, as the API would word
    /// it; `nil` when it keeps them. Checked: every `tool_result` answers a `tool_use` of the assistant message just
    /// before it, and comes before any other block of its message; an assistant `tool_use` followed by another
    /// message is answered, every one of them, in the next (user) message; `tool_use` ids are unique; a thinking
    /// block's signature is the one the stub gave it.
    func toolUseViolation() -> String? {
        var seen: Set<String> = []
        var pending: [String] = []
        for (index, message) in messages.enumerated() {
            let results = message.blocks.filter { $0.type == "tool_result" }
            if !pending.isEmpty {
                guard message.role == "user" else {
                    return "messages.\(index): tool_use ids were found without tool_result blocks immediately after: \(pending.joined(separator: ", "))"
                }
                let answered = Set(results.compactMap(\.toolUseID))
                let missing = pending.filter { !answered.contains($0) }
                if !missing.isEmpty {
                    return "messages.\(index): tool_use ids were found without tool_result blocks immediately after: \(missing.joined(separator: ", "))"
                }
            }
            if message.role == "user" {
                var sawOther = false
                for block in message.blocks {
                    if block.type == "tool_result" {
                        if sawOther {
                            return "messages.\(index): tool_result blocks must come first in the user message"
                        }
                        guard let id = block.toolUseID, pending.contains(id) else {
                            return "messages.\(index): unexpected tool_use_id found in tool_result blocks: \(block.toolUseID ?? "null"). Each tool_result block must have a corresponding tool_use block in the previous message."
                        }
                    } else {
                        sawOther = true
                    }
                }
                pending = []
            } else {
                if !results.isEmpty { return "messages.\(index): tool_result blocks are only allowed in user messages" }
                pending = []
                for block in message.blocks {
                    switch block.type {
                    case "tool_use":
                        guard let id = block.id, !id.isEmpty else { return "messages.\(index): tool_use without an id" }
                        if !seen.insert(id).inserted { return "messages.\(index): tool_use ids must be unique: \(id)" }
                        pending.append(id)
                    case "thinking":
                        if block.signature != StubSignature.sign(block.thinking ?? "") {
                            return "messages.\(index): Invalid `signature` in `thinking` block"
                        }
                    default:
                        break
                    }
                }
            }
        }
        return nil
    }

    /// Whether the last message is a user message holding tool results and nothing else.
    var answersTools: Bool {
        guard let last = messages.last, last.role == "user", !last.blocks.isEmpty else { return false }
        return last.blocks.allSatisfy { $0.type == "tool_result" }
    }

    /// The default reply to tool results: `Tool results: <contents joined " | ">`.
    var toolResultsReply: String {
        let contents = (messages.last?.blocks ?? []).map { $0.content ?? "" }
        return "Tool results: " + contents.joined(separator: " | ")
    }
}

/// Byte spans of a JSON body's top-level `messages` array elements, found without decoding them.
enum RawJSON {
    /// The exact text of each element of the top-level `messages` array (empty when there is none).
    static func messageElements(_ body: [UInt8]) -> [String] {
        var scanner = Scanner(bytes: body)
        scanner.skipSpace()
        guard scanner.eat(UInt8(ascii: "{")) else { return [] }
        while true {
            scanner.skipSpace()
            guard let key = scanner.string() else { return [] }
            scanner.skipSpace()
            guard scanner.eat(UInt8(ascii: ":")) else { return [] }
            scanner.skipSpace()
            if key == "messages" {
                guard scanner.eat(UInt8(ascii: "[")) else { return [] }
                var elements: [String] = []
                while true {
                    scanner.skipSpace()
                    if scanner.eat(UInt8(ascii: "]")) { return elements }
                    let start = scanner.position
                    guard scanner.skipValue() else { return elements }
                    elements.append(String(decoding: body[start..<scanner.position], as: UTF8.self))
                    scanner.skipSpace()
                    _ = scanner.eat(UInt8(ascii: ","))
                }
            }
            guard scanner.skipValue() else { return [] }
            scanner.skipSpace()
            guard scanner.eat(UInt8(ascii: ",")) else { return [] }
        }
    }

    struct Scanner {
        let bytes: [UInt8]
        var position = 0

        mutating func skipSpace() {
            while position < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[position]) { position += 1 }
        }

        mutating func eat(_ byte: UInt8) -> Bool {
            guard position < bytes.count, bytes[position] == byte else { return false }
            position += 1
            return true
        }

        /// Reads a string and returns it decoded only when it has no escapes (enough for keys).
        mutating func string() -> String? {
            let start = position
            guard skipString() else { return nil }
            return String(decoding: bytes[(start + 1)..<(position - 1)], as: UTF8.self)
        }

        mutating func skipString() -> Bool {
            guard eat(UInt8(ascii: "\"")) else { return false }
            while position < bytes.count {
                let b = bytes[position]
                position += 1
                if b == UInt8(ascii: "\\") {
                    position += 1
                } else if b == UInt8(ascii: "\"") {
                    return true
                }
            }
            return false
        }

        mutating func skipValue() -> Bool {
            guard position < bytes.count else { return false }
            switch bytes[position] {
            case UInt8(ascii: "\""):
                return skipString()
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while position < bytes.count {
                    let b = bytes[position]
                    if b == UInt8(ascii: "\"") {
                        guard skipString() else { return false }
                        continue
                    }
                    position += 1
                    if b == UInt8(ascii: "{") || b == UInt8(ascii: "[") { depth += 1 }
                    if b == UInt8(ascii: "}") || b == UInt8(ascii: "]") {
                        depth -= 1
                        if depth == 0 { return true }
                    }
                }
                return false
            default:
                let start = position
                while position < bytes.count,
                    ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x0A, 0x0D, 0x09].contains(
                        bytes[position])
                {
                    position += 1
                }
                return position > start
            }
        }
    }
}
