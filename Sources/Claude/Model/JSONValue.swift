/// A JSON value that keeps numbers as the text they were written with, so a value read back from anywhere (Claude's
/// stream, a `jsonb` column) writes out as the same bytes: ``canonicalText`` sorts object keys and uses no whitespace.
///
/// This is what makes a stored tool input replay byte-identically (the prompt cache depends on it): the text Claude
/// streamed and the text Postgres returns for the same `jsonb` differ in spacing and key order, never in
/// ``canonicalText``.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// A number, as written (validated as a JSON number).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Parses JSON text (one value, surrounding whitespace allowed).
    public init(parsing text: String) throws(JSONValueError) {
        var parser = JSONValueParser(bytes: Array(text.utf8))
        self = try parser.parseDocument()
    }

    /// Object members, or nil for anything else.
    public var objectValue: [String: JSONValue]? {
        if case .object(let members) = self { return members }
        return nil
    }

    /// The string, or nil for anything else.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// Keys sorted by their UTF-8 bytes, no insignificant whitespace, strings escaped minimally.
    public var canonicalText: String {
        var writer = JSONWriter()
        writer.value(self)
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}

/// JSON text that could not be parsed; `message` says where.
public struct JSONValueError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension JSONWriter {
    mutating func value(_ value: JSONValue) {
        switch value {
        case .null: raw("null")
        case .bool(let b): raw(b ? "true" : "false")
        case .number(let n): raw(n)
        case .string(let s): string(s)
        case .array(let items):
            beginArray()
            for item in items { self.value(item) }
            endArray()
        case .object(let members):
            beginObject()
            for key in members.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                self.key(key)
                self.value(members[key]!)
            }
            endObject()
        }
    }
}

/// The one event shape that makes up most of a reply, read without building a ``JSONValue``: exactly
/// `{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"…"}}`, the way the API writes it.
/// Anything else (other spacing or key order, another delta type) returns nil and goes to the full parser, so the
/// result is always the full parser's. Public for `agent-bench relay-floor`, which keeps a reply's text without the
/// rest of the client.
public enum TextDeltaShape {
    private static let head = Array(#"{"type":"content_block_delta","index":"#.utf8)
    private static let middle = Array(#","delta":{"type":"text_delta","text":"#.utf8)

    /// The block index and the text, or nil when `data` is not exactly that shape.
    public static func match(_ data: String) -> (index: Int, text: String)? {
        var data = data
        return data.withUTF8 { utf8 -> (index: Int, text: String)? in
            guard utf8.count > head.count + middle.count + 4, utf8.starts(with: head) else { return nil }
            var at = head.count
            var index = 0
            let digitsStart = at
            while at < utf8.count, (0x30...0x39).contains(utf8[at]), at - digitsStart < 9 {
                index = index * 10 + Int(utf8[at] - 0x30)
                at += 1
            }
            guard at > digitsStart, at < utf8.count, utf8[digitsStart] != 0x30 || at == digitsStart + 1,
                utf8[at...].starts(with: middle), utf8.count > at + middle.count, utf8[at + middle.count] == 0x22
            else { return nil }
            // The text runs to the closing `"}}`; `parseString` checks escapes and UTF-8 as the full parser does.
            guard utf8[utf8.count - 3] == 0x22, utf8[utf8.count - 2] == 0x7D, utf8[utf8.count - 1] == 0x7D else {
                return nil
            }
            // The usual delta has no escapes: its bytes are the text (a short one fits in a String without allocating).
            let content = utf8[(at + middle.count + 1)..<(utf8.count - 3)]
            if !content.contains(where: { $0 == 0x22 || $0 == 0x5C || $0 < 0x20 }) {
                guard let text = String(validating: content, as: UTF8.self) else { return nil }
                return (index, text)
            }
            var parser = JSONValueParser(bytes: Array(utf8[(at + middle.count)...]))
            guard let text = try? parser.parseStringValue(), parser.remaining == [0x7D, 0x7D] else { return nil }
            return (index, text)
        }
    }
}

private struct JSONValueParser {
    let bytes: [UInt8]
    var index = 0
    var depth = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// A string value at the current position (which must be its opening quote).
    mutating func parseStringValue() throws(JSONValueError) -> String {
        guard index < bytes.count, bytes[index] == 0x22 else { throw fail("expected a string") }
        return try parseString()
    }

    /// The bytes after the current position.
    var remaining: ArraySlice<UInt8> { bytes[index...] }

    mutating func parseDocument() throws(JSONValueError) -> JSONValue {
        let value = try parseValue()
        skipWhitespace()
        guard index == bytes.count else { throw fail("unexpected text after the JSON value") }
        return value
    }

    private func fail(_ what: String) -> JSONValueError {
        JSONValueError(message: "invalid JSON at byte \(index): \(what)")
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
    }

    private mutating func parseValue() throws(JSONValueError) -> JSONValue {
        skipWhitespace()
        guard index < bytes.count else { throw fail("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            depth += 1
            guard depth <= 512 else { throw fail("nested too deeply") }
            defer { depth -= 1 }
            index += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                let key = try parseString()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                index += 1
                members[key] = try parseValue()
                skipWhitespace()
                guard index < bytes.count else { throw fail("unexpected end in an object") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return .object(members)
                } else {
                    throw fail("expected ',' or '}'")
                }
            }
        case UInt8(ascii: "["):
            depth += 1
            guard depth <= 512 else { throw fail("nested too deeply") }
            defer { depth -= 1 }
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            while true {
                items.append(try parseValue())
                skipWhitespace()
                guard index < bytes.count else { throw fail("unexpected end in an array") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .array(items)
                } else {
                    throw fail("expected ',' or ']'")
                }
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default:
            return .number(try parseNumber())
        }
    }

    private mutating func literal(_ word: String) throws(JSONValueError) {
        let w = Array(word.utf8)
        guard index + w.count <= bytes.count, Array(bytes[index..<(index + w.count)]) == w else {
            throw fail("unexpected character")
        }
        index += w.count
    }

    private mutating func parseNumber() throws(JSONValueError) -> String {
        let start = index
        func digits() -> Int {
            let s = index
            while index < bytes.count, (0x30...0x39).contains(bytes[index]) { index += 1 }
            return index - s
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        let intStart = index
        guard digits() > 0 else { throw fail("unexpected character") }
        if bytes[intStart] == 0x30, index - intStart > 1 { throw fail("a number has a leading zero") }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digits() > 0 else { throw fail("expected digits after '.'") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                index += 1
            }
            guard digits() > 0 else { throw fail("expected exponent digits") }
        }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private mutating func hex4() throws(JSONValueError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw fail("a \\u escape is cut") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[index]
            let digit: UInt32
            switch c {
            case 0x30...0x39: digit = UInt32(c - 0x30)
            case 0x41...0x46: digit = UInt32(c - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(c - 0x61 + 10)
            default: throw fail("bad \\u escape")
            }
            value = value * 16 + digit
            index += 1
        }
        return value
    }

    private mutating func parseString() throws(JSONValueError) -> String {
        index += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard index < bytes.count else { throw fail("a string is not closed") }
            let c = bytes[index]
            index += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let text = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8") }
                return text
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { throw fail("a string is not closed") }
                let e = bytes[index]
                index += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard index + 2 <= bytes.count, bytes[index] == UInt8(ascii: "\\"),
                            bytes[index + 1] == UInt8(ascii: "u")
                        else { throw fail("a lone surrogate") }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail("a lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw fail("a lone surrogate") }
                    out.append(contentsOf: Array(String(Character(unicode)).utf8))
                default:
                    throw fail("bad escape")
                }
            case 0x00..<0x20:
                throw fail("a control character in a string")
            default:
                out.append(c)
            }
        }
    }
}
