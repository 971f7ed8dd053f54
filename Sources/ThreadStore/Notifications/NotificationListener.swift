import Foundation
public import Logging
import Synchronization

/// Receives Postgres notifications (`LISTEN`) on a dedicated session, reconnecting on its own after any failure.
///
/// The listener owns one libpq connection outside the `Database` pool, opened the same way (same conninfo,
/// `application_name` and TCP keepalives), on a thread of its own: nothing blocks Swift's cooperative pool. It needs
/// a session of its own on the server, so behind a pooler point it at a session-mode endpoint (a transaction-mode
/// pooler accepts `LISTEN` and then never delivers).
///
/// ```swift
/// let listener = try NotificationListener(configuration: configuration, channels: ["turns"], logger: logger)
/// group.addTask { await listener.run() }
/// for await event in listener.events {
///     switch event {
///     case .listening: await resynchronise()  // anything sent before this may have been missed
///     case .notification(_, let payload, _): handle(payload)
///     }
/// }
/// ```
///
/// Liveness: after 30 s without any traffic the session sends `SELECT 1` and presumes the server dead when a round
/// trip is not answered within 20 s, so a dead server is noticed within 50 s even over a Unix socket or when a stopped
/// backend's kernel still acknowledges (TCP keepalives alone would take about a minute and cover TCP only). Any
/// failure is logged once per outage as a warning; reconnects back off from 100 ms, doubling to 5 s.
public final class NotificationListener: Sendable {
    /// What the listener reports, in order.
    public enum Event: Sendable, Equatable {
        /// A session is connected and all LISTENs are active. Yielded after the first connect and after every
        /// reconnect: notifications sent while there was no session are lost, so re-read whatever they announce.
        case listening
        /// A notification on one of the channels; `senderPID` is the process id of the sending backend.
        case notification(channel: String, payload: String, senderPID: Int32)
    }

    /// The events, for a single consumer. Buffering is unbounded so no notification is ever dropped; a consumer
    /// that stops reading lets memory grow. Finishes when `run()` returns (or on `stop()` when `run()` never started).
    public let events: AsyncStream<Event>

    private let continuation: AsyncStream<Event>.Continuation
    private let configuration: DatabaseConfiguration
    private let channels: [String]
    private let policy: ListenerLiveness.Policy
    private let logger: Logger
    private let stopSignal = StopSignal()
    private let started = Atomic<Bool>(false)

    /// A listener on `channels`; nothing is opened until `run()`.
    /// - Parameters:
    ///   - configuration: How to reach Postgres; `poolSize`, `acquireTimeout` and `maxWaiters` are not used.
    ///   - channels: Channel names, each 1 to 63 bytes of UTF-8 without NUL or double quote, matched exactly
    ///     (they are quoted identifiers, so case-sensitive); at least one. Fixed for the listener's lifetime.
    /// - Throws: `StoreError.invalidArgument` for an empty list or a name out of range.
    public convenience init(configuration: DatabaseConfiguration, channels: [String], logger: Logger) throws {
        try self.init(configuration: configuration, channels: channels, logger: logger, policy: .init())
    }

    init(
        configuration: DatabaseConfiguration, channels: [String], logger: Logger, policy: ListenerLiveness.Policy
    ) throws {
        guard !channels.isEmpty else {
            throw StoreError(.invalidArgument, "a notification listener needs at least one channel")
        }
        var unique: [String] = []
        for channel in channels where !unique.contains(channel) {
            try NotificationLimits.checkChannel(channel)
            unique.append(channel)
        }
        self.configuration = configuration
        self.channels = unique
        self.logger = logger
        self.policy = policy
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
    }

    deinit { continuation.finish() }

    /// Connects, LISTENs and delivers notifications to `events` until `stop()` is called or the calling task is
    /// cancelled, reconnecting after any failure. On return the connection is closed and `events` has finished.
    ///
    /// Call it once; later calls return at once. Everything blocking runs on the listener's own thread.
    public func run() async {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let continuation = continuation
                let thread = Thread { [self] in
                    ListenerLoop(
                        configuration: configuration, channels: channels, policy: policy, logger: logger,
                        stop: stopSignal, emit: { continuation.yield($0) }
                    ).run()
                    continuation.finish()
                    done.resume()
                }
                thread.name = "postgres-listen"
                thread.start()
            }
        } onCancel: {
            stop()
        }
    }

    /// Ends `run()` promptly (it wakes the listener's thread); idempotent and permanent.
    public func stop() {
        stopSignal.signal()
        if !started.load(ordering: .acquiring) { continuation.finish() }
    }
}
