import Testing

@testable import ThreadStore

/// The pure decisions behind the notification listener, driven without a socket.
@Suite("Listener policies: reconnect backoff and idle liveness")
struct ListenerPolicyTests {
    @Test("reconnect pauses start at 100 ms, double up to 5 s and start over after a reset")
    func backoff() {
        var backoff = ReconnectBackoff()
        let pauses = (0..<9).map { _ in backoff.next() }
        #expect(pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5].map { Duration.milliseconds(Int($0 * 1000)) })
        backoff.reset()
        #expect(backoff.next() == .milliseconds(100))
    }

    @Test("an idle session is probed after 30 s and presumed dead 20 s after an unanswered round trip")
    func liveness() {
        let start = ContinuousClock.now
        var liveness = ListenerLiveness(policy: .init(), now: start)
        #expect(liveness.next(now: start) == .wait(milliseconds: 30_000))
        liveness.received(now: start + .seconds(10))  // a notification arrived: the idle time starts over
        #expect(liveness.next(now: start + .seconds(35)) == .wait(milliseconds: 5_000))
        #expect(liveness.next(now: start + .seconds(40)) == .sendProbe)
        liveness.sent(now: start + .seconds(40))
        #expect(liveness.next(now: start + .seconds(41)) == .wait(milliseconds: 19_000))
        liveness.received(now: start + .seconds(45))  // traffic is not the answer: the deadline stands
        #expect(liveness.next(now: start + .seconds(60)) == .presumeDead)
        liveness.answered(now: start + .seconds(59))
        #expect(liveness.next(now: start + .seconds(60)) == .wait(milliseconds: 29_000))
    }
}
