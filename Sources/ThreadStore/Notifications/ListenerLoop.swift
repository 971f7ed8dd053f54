import Logging

/// The listener thread's body: connect, LISTEN, deliver notifications; after a failure, reconnect with backoff until
/// stopped. Runs on that thread only.
struct ListenerLoop {
    let configuration: DatabaseConfiguration
    let channels: [String]
    let policy: ListenerLiveness.Policy
    let logger: Logger
    let stop: StopSignal
    let emit: (NotificationListener.Event) -> Void

    func run() {
        var backoff = ReconnectBackoff()
        // Set from the first failure until a session is listening again: one warning per outage, not per attempt.
        var outageStart: ContinuousClock.Instant?
        while !stop.isSignalled {
            do {
                guard let session = try ListenerSession.connect(configuration, stop: stop) else { return }
                try session.serve(
                    channels: channels, policy: policy, stop: stop,
                    listening: {
                        if let outageStart {
                            logger.info(
                                "notification listener is listening again",
                                metadata: ["outage": "\((ContinuousClock.now - outageStart).secondsDescription)"])
                        } else {
                            logger.debug("notification listener is listening", metadata: ["channels": "\(channels)"])
                        }
                        outageStart = nil
                        backoff.reset()
                        emit(.listening)
                    },
                    deliver: { channel, payload, senderPID in
                        emit(.notification(channel: channel, payload: payload, senderPID: senderPID))
                    })
                return
            } catch {
                if stop.isSignalled { return }
                let delay = backoff.next()
                if outageStart == nil {
                    outageStart = .now
                    logger.warning(
                        "notification listener has no database connection; reconnecting",
                        metadata: ["error": "\(error)"])
                } else {
                    logger.debug(
                        "notification listener reconnect failed",
                        metadata: ["error": "\(error)", "retry_in": "\(delay.secondsDescription)"])
                }
                pause(delay)
            }
        }
    }

    /// Sleeps for `delay` unless stopped first.
    private func pause(_ delay: Duration) {
        let deadline = Deadline(after: delay)
        while !deadline.hasPassed() {
            if stop.wait(socket: -1, events: 0, milliseconds: deadline.pollTimeout()) == .stopped { return }
        }
    }
}
