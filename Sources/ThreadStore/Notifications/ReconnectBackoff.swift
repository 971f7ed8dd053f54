/// The pause before each reconnect attempt of the notification listener: 100 ms, doubling up to 5 s, back to 100 ms
/// once a session is listening again.
struct ReconnectBackoff: Equatable {
    static let initial: Duration = .milliseconds(100)
    static let maximum: Duration = .seconds(5)

    private var nextDelay = Self.initial

    /// The pause before the next attempt; each call doubles the one after it.
    mutating func next() -> Duration {
        let delay = nextDelay
        nextDelay = min(nextDelay * 2, Self.maximum)
        return delay
    }

    mutating func reset() { nextDelay = Self.initial }
}
