import Foundation

/// Splits newline-delimited JSON-RPC (MCP's stdio framing) into messages, holding at most one partial message.
///
/// A message longer than `maxMessageBytes` is refused (`.tooLarge`) before more of it is buffered: the caller ends
/// the connection, so a runaway server costs at most that much memory.
struct MessageFramer {
    /// The hard ceiling for one JSON-RPC message (16 MiB).
    static let maxMessageBytes = 16 * 1024 * 1024

    enum Output: Equatable {
        case message([UInt8])
        case tooLarge
    }

    private var partial: [UInt8] = []
    let limit: Int

    init(limit: Int = MessageFramer.maxMessageBytes) {
        self.limit = limit
    }

    /// Feeds bytes; returns the complete messages (blank lines skipped), or `.tooLarge` last.
    mutating func feed(_ bytes: some Collection<UInt8>) -> [Output] {
        var outputs: [Output] = []
        var start = bytes.startIndex
        while let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let piece = bytes[start..<newline]
            guard partial.count + piece.count <= limit else {
                partial = []
                return outputs + [.tooLarge]
            }
            partial.append(contentsOf: piece)
            if partial.last == UInt8(ascii: "\r") { partial.removeLast() }
            if partial.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }) {
                outputs.append(.message(partial))
            }
            partial = []
            start = bytes.index(after: newline)
        }
        let rest = bytes[start...]
        guard partial.count + rest.count <= limit else {
            partial = []
            return outputs + [.tooLarge]
        }
        partial.append(contentsOf: rest)
        return outputs
    }
}
