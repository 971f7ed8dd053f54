/// The instant by which the server must have answered one round trip, or none (migration scripts).
///
/// Pure: the connection asks it how long `poll()` may wait and whether time is up, so the rounding is testable
/// without a socket.
struct Deadline {
    /// The limit it was made from, for the error message; nil means no deadline.
    let limit: Duration?
    private let instant: ContinuousClock.Instant?

    /// A deadline `limit` from `now`; nil, zero or negative means none.
    init(after limit: Duration?, now: ContinuousClock.Instant = .now) {
        if let limit, limit > .zero {
            self.limit = limit
            instant = now + limit
        } else {
            self.limit = nil
            instant = nil
        }
    }

    /// `poll()`'s timeout: -1 (wait forever) without a deadline, else the remaining time in milliseconds rounded up
    /// (so a wake-up never comes before the deadline), 0 once it has passed.
    func pollTimeout(now: ContinuousClock.Instant = .now) -> Int32 {
        guard let instant else { return -1 }
        let remaining = now.duration(to: instant)
        if remaining <= .zero { return 0 }
        return Int32(clamping: remaining.roundedUpMilliseconds)
    }

    func hasPassed(now: ContinuousClock.Instant = .now) -> Bool {
        guard let instant else { return false }
        return now >= instant
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: Int {
        Int(components.seconds) * 1000 + Int(components.attoseconds / 1_000_000_000_000_000)
    }

    /// Whole milliseconds, rounded up.
    var roundedUpMilliseconds: Int {
        let down = milliseconds
        return .milliseconds(down) < self ? down + 1 : down
    }

    /// "10 s", "1.5 s", "0.25 s": for messages that name a limit.
    var secondsDescription: String {
        let milliseconds = self.milliseconds
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000) s" }
        var fraction = String(milliseconds % 1000)
        fraction = String(repeating: "0", count: 3 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(milliseconds / 1000).\(fraction) s"
    }
}
