/// Splits a byte stream into lines on `\n`, `\r\n` or a lone `\r`, working on bytes only.
///
/// A trailing `\r` at the end of a chunk is held until the next byte shows whether a `\n` follows, so a CRLF
/// split across chunks counts as one terminator. Lines are returned as raw bytes: decode UTF-8 per complete line,
/// never per chunk, so that multi-byte characters split across chunks reassemble.
public struct SSELineSplitter: Sendable {
    private var partial: [UInt8] = []
    private var pendingCR = false

    /// Creates an empty splitter.
    public init() {}

    /// Feeds a chunk and calls `onLine` for every line completed by it (without its terminator).
    public mutating func feed(_ chunk: UnsafeRawBufferPointer, onLine: (ArraySlice<UInt8>) -> Void) {
        let n = chunk.count
        var i = 0
        if pendingCR {
            pendingCR = false
            if n > 0 && chunk[0] == 0x0A { i = 1 }
        }
        var lineStart = i
        while i < n {
            let b = chunk[i]
            if b == 0x0A || b == 0x0D {
                if partial.isEmpty {
                    onLine(ArraySlice(chunk[lineStart..<i]))
                } else {
                    partial.append(contentsOf: chunk[lineStart..<i])
                    onLine(partial[...])
                    partial.removeAll(keepingCapacity: true)
                }
                if b == 0x0D {
                    if i + 1 < n {
                        if chunk[i + 1] == 0x0A { i += 1 }
                    } else {
                        pendingCR = true
                    }
                }
                i += 1
                lineStart = i
            } else {
                i += 1
            }
        }
        if lineStart < n { partial.append(contentsOf: chunk[lineStart..<n]) }
    }

    /// Feeds a chunk of bytes and returns the completed lines.
    public mutating func feed(_ bytes: [UInt8]) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        bytes.withUnsafeBytes { feed($0) { lines.append(Array($0)) } }
        return lines
    }

    /// Ends the input: returns the unterminated last line, if any bytes are pending.
    public mutating func flush() -> [UInt8]? {
        pendingCR = false
        guard !partial.isEmpty else { return nil }
        defer { partial.removeAll() }
        return partial
    }
}
