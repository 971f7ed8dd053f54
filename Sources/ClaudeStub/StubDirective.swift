import Foundation

/// Scenarios selected by the text of the last user message, for tests that can only control what a user types.
///
/// A directive is `[[stub:COMMAND]]` anywhere in the last user message (the first one wins; it is removed from
/// the echoed text). Commands:
///
/// | Command | Scenario |
/// |---|---|
/// | `error STATUS [TYPE]` | pre-stream JSON error, e.g. `[[stub:error 529]]`, `[[stub:error 400 invalid_request_error]]` |
/// | `midstream-error after N [TYPE]` | `event: error` (default `overloaded_error`) after N text deltas |
/// | `truncate after N` | clean end of the stream after N deltas, without `message_stop` |
/// | `reset after N` | connection closed abruptly after N deltas |
/// | `stall after N` | silence after N deltas |
/// | `slow MSms x COUNT` | COUNT deltas, MS milliseconds apart (e.g. `slow 100ms x 10`) |
/// | `hold-open` | keeps the connection open after `message_stop` |
/// | `stop REASON [SEQUENCE]` | the given `stop_reason` (e.g. `stop max_tokens`, `stop stop_sequence END`) |
/// | `reply TEXT` | replies with TEXT (everything after `reply `) |
/// | `fail-first N then ok` | 529 for the first N attempts of the same request body, then the normal reply |
/// | `multi-block` | thinking, text and tool_use blocks |
/// | `tool NAME JSON` | text `Calling NAME.` and a call of tool NAME with input JSON (`{}` when omitted) |
/// | `lines lf\|crlf\|cr` | the default reply with that line ending |
/// | `chunks A-B` | the default reply with writes split into A…B byte pieces |
///
/// Unknown commands are ignored (the default reply is sent). Counts are capped at `maximumDeltas` and delays at
/// `maximumDelay`, so no directive can make the stub (or the service relaying it) grow without bound.
enum StubDirective {
    static let maximumDeltas = 10_000
    static let maximumDelay = 10_000  // milliseconds

    /// Finds a directive in `text`; returns the scenario and the text without the directive.
    static func parse(_ text: String) -> (StubScenario?, String) {
        guard let open = text.range(of: "[[stub:"),
            let close = text.range(of: "]]", range: open.upperBound..<text.endIndex)
        else {
            return (nil, text)
        }
        let command = String(text[open.upperBound..<close.lowerBound]).trimmingSpaces()
        var rest = text
        rest.removeSubrange(open.lowerBound..<close.upperBound)
        rest = rest.trimmingSpaces()
        let words = command.split(separator: " ").map(String.init)
        guard let head = words.first else { return (nil, rest) }
        let int: (Int) -> Int? = { words.count > $0 ? Int(words[$0]).map { min(max($0, 0), maximumDeltas) } : nil }
        let scenario: StubScenario?
        switch head {
        case "error":
            scenario = int(1).flatMap { (100...599).contains($0) ? $0 : nil }.map {
                StubScenario.httpError(
                    status: $0, type: words.count > 2 ? words[2] : nil, message: "stub directive error \($0)")
            }
        case "midstream-error":
            scenario = int(2).map {
                StubScenario.midStreamError(afterDeltas: $0, type: words.count > 3 ? words[3] : "overloaded_error")
            }
        case "truncate":
            scenario = int(2).map { StubScenario.truncate(afterDeltas: $0) }
        case "reset":
            scenario = int(2).map { StubScenario.truncateByReset(afterDeltas: $0) }
        case "stall":
            scenario = int(2).map { StubScenario.stall(afterDeltas: $0) }
        case "slow":
            let ms = words.count > 1 ? Int(words[1].replacingSuffix("ms")).map { min(max($0, 0), maximumDelay) } : nil
            if let ms, let count = int(3) {
                scenario = StubScenario.reply().paced(deltaInterval: .milliseconds(ms), deltaCount: count)
            } else {
                scenario = nil
            }
        case "hold-open":
            scenario = .holdOpenAfterStop
        case "stop":
            scenario = words.count > 1 ? .stopReason(words[1], stopSequence: words.count > 2 ? words[2] : nil) : nil
        case "reply":
            scenario = .reply(String(command.dropFirst("reply".count)).trimmingSpaces())
        case "fail-first":
            scenario = int(1).map { StubScenario.failFirst($0) }
        case "multi-block":
            scenario = .multiBlock
        case "tool":
            if words.count > 1 {
                let name = words[1]
                let input = words.count > 2 ? words[2...].joined(separator: " ") : "{}"
                scenario = .blocks([.text("Calling \(name)."), .toolUse(id: "", name: name, input: input)])
            } else {
                scenario = nil
            }
        case "lines":
            scenario =
                words.count > 1 ? StubScenario.LineEnding(rawValue: words[1]).map { StubScenario.lineEnding($0) } : nil
        case "chunks":
            let bounds = words.count > 1 ? words[1].split(separator: "-").compactMap { Int($0) } : []
            scenario =
                bounds.count == 2 && bounds[0] >= 1 && bounds[0] <= bounds[1] ? .chunkSize(bounds[0]...bounds[1]) : nil
        default:
            scenario = nil
        }
        return (scenario, rest)
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = self[...]
        while let f = s.first, f == " " || f == "\n" || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\n" || l == "\t" { s.removeLast() }
        return String(s)
    }

    func replacingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
