/// One server-sent event as dispatched by ``SSEDecoder``.
public struct SSEEvent: Sendable, Hashable {
    /// The `event:` field, or `nil` when the block had none (WHATWG then calls the type `message`).
    public var event: String?
    /// The `data:` lines joined with `\n`.
    public var data: String
    /// The last event id seen so far (it persists across events), or `nil` if none was set.
    public var id: String?

    /// Creates an event.
    public init(event: String? = nil, data: String, id: String? = nil) {
        self.event = event
        self.data = data
        self.id = id
    }
}

/// A pure server-sent-events decoder: bytes in, events out, following the WHATWG "interpreting an event stream"
/// rules.
///
/// - Lines are split on bytes (`\n`, `\r\n`, lone `\r`, also split across chunks) before UTF-8 decoding, so
///   U+2028 and other Unicode separators are never line ends and multi-byte characters may be split anywhere.
/// - A leading UTF-8 BOM is stripped; `:` lines are comments; a line without a colon is a field with an empty
///   value; exactly one leading space of a value is stripped; `id` persists and is ignored if it contains NUL;
///   `retry` is honoured only if all ASCII digits; unknown fields are ignored.
/// - A block whose data buffer is empty is not dispatched (WHATWG). Set `dispatchEventsWithoutData` to also see
///   blocks such as `event: ping` with no data (what the Python and TypeScript SDKs do).
/// - An event without its terminating blank line at end of input is discarded.
public struct SSEDecoder: Sendable {
    /// Whether blocks with an `event:` line but no `data:` line are dispatched with empty data.
    public var dispatchEventsWithoutData: Bool
    /// The last event id (persists across events).
    public private(set) var lastEventID: String?
    /// The reconnection time from the last valid `retry:` field, in milliseconds.
    public private(set) var reconnectionTimeMilliseconds: Int?

    private var splitter = SSELineSplitter()
    private var atStreamStart = true
    private var eventType: String?
    private var data = ""
    private var hasData = false

    /// Creates a decoder.
    public init(dispatchEventsWithoutData: Bool = false) {
        self.dispatchEventsWithoutData = dispatchEventsWithoutData
    }

    /// Feeds raw bytes and returns the events they complete.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [SSEEvent] {
        var events: [SSEEvent] = []
        var splitter = self.splitter
        self.splitter = SSELineSplitter()  // keep the buffer uniquely referenced while feeding
        splitter.feed(bytes) { line in
            if let event = self.process(line: line) { events.append(event) }
        }
        self.splitter = splitter
        return events
    }

    /// Feeds raw bytes and returns the events they complete.
    public mutating func feed(_ bytes: [UInt8]) -> [SSEEvent] {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// Ends the input. An event still lacking its blank line is discarded, so this returns no events; it
    /// resets the per-event state.
    public mutating func finish() {
        _ = splitter.flush()
        eventType = nil
        data = ""
        hasData = false
    }

    private mutating func process(line rawLine: ArraySlice<UInt8>) -> SSEEvent? {
        var line = rawLine
        if atStreamStart {
            atStreamStart = false
            if line.starts(with: [0xEF, 0xBB, 0xBF]) { line = line.dropFirst(3) }
        }
        if line.isEmpty { return dispatch() }
        if line.first == 0x3A { return nil }  // ":" comment
        let name: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = line.firstIndex(of: 0x3A) {
            name = line[line.startIndex..<colon]
            value = line[(colon + 1)...]
            if value.first == 0x20 { value = value.dropFirst() }
        } else {
            name = line
            value = []
        }
        switch name.count {
        case 4 where name.elementsEqual("data".utf8):
            if hasData { data.append("\n") }
            data.append(String(decoding: value, as: UTF8.self))
            hasData = true
        case 5 where name.elementsEqual("event".utf8):
            eventType = String(decoding: value, as: UTF8.self)
        case 2 where name.elementsEqual("id".utf8):
            if !value.contains(0) { lastEventID = String(decoding: value, as: UTF8.self) }
        case 5 where name.elementsEqual("retry".utf8):
            if !value.isEmpty, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let ms = Int(String(decoding: value, as: UTF8.self))
            {
                reconnectionTimeMilliseconds = ms
            }
        default:
            break
        }
        return nil
    }

    private mutating func dispatch() -> SSEEvent? {
        defer {
            eventType = nil
            data = ""
            hasData = false
        }
        if !hasData && !(dispatchEventsWithoutData && eventType != nil) { return nil }
        return SSEEvent(event: eventType, data: data, id: lastEventID)
    }
}
