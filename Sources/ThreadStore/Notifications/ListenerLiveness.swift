/// Decides when an idle listening session must prove it is alive and when it is presumed dead. Pure: the session
/// reports what happened, and asks what to do and how long `poll()` may wait.
///
/// A listening session only reads, so a server that died without closing the socket (a stopped or partitioned
/// backend; TCP keepalives do not cover Unix sockets and take a minute over TCP) would go unnoticed. After
/// `probeAfterIdle` without any bytes from the server a `SELECT 1` is sent; when a round trip in flight (the LISTENs
/// or that probe) is not answered within `answerWithin`, the session is presumed dead. With the defaults a dead
/// server is noticed within 30 + 20 = 50 s.
struct ListenerLiveness {
    struct Policy: Sendable, Equatable {
        var probeAfterIdle: Duration = .seconds(30)
        var answerWithin: Duration = .seconds(20)
    }

    enum Action: Equatable {
        /// Nothing to do; wait for the socket at most this long (rounded up to whole milliseconds).
        case wait(milliseconds: Int32)
        case sendProbe
        case presumeDead
    }

    let policy: Policy
    private var lastTraffic: ContinuousClock.Instant
    private var answerDeadline: ContinuousClock.Instant?

    init(policy: Policy, now: ContinuousClock.Instant) {
        self.policy = policy
        lastTraffic = now
    }

    /// Whether a round trip is in flight.
    var isAwaitingAnswer: Bool { answerDeadline != nil }

    /// Bytes arrived from the server (a result or a notification).
    mutating func received(now: ContinuousClock.Instant) { lastTraffic = now }

    /// A round trip (the LISTENs or a probe) went out.
    mutating func sent(now: ContinuousClock.Instant) { answerDeadline = now + policy.answerWithin }

    /// The round trip in flight completed.
    mutating func answered(now: ContinuousClock.Instant) {
        answerDeadline = nil
        lastTraffic = now
    }

    func next(now: ContinuousClock.Instant) -> Action {
        if let answerDeadline {
            return now >= answerDeadline ? .presumeDead : .wait(milliseconds: Self.milliseconds(now, answerDeadline))
        }
        let probeAt = lastTraffic + policy.probeAfterIdle
        return now >= probeAt ? .sendProbe : .wait(milliseconds: Self.milliseconds(now, probeAt))
    }

    private static func milliseconds(_ now: ContinuousClock.Instant, _ then: ContinuousClock.Instant) -> Int32 {
        Int32(clamping: now.duration(to: then).roundedUpMilliseconds)
    }
}
