import CPostgres
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// One dedicated libpq session that LISTENs and then waits for notifications; confined to the listener's thread.
///
/// Nothing here blocks past a `poll()` that also watches the stop signal: connecting is non-blocking
/// (`PQconnectStartParams` + `PQconnectPoll`), the LISTENs and the liveness probe are sent with `PQsendQuery` and their
/// results collected as input arrives, between notifications.
final class ListenerSession {
    private let handle: OpaquePointer

    private init(handle: OpaquePointer) { self.handle = handle }

    deinit { PQfinish(handle) }

    /// The server process id of this session, for log lines.
    var backendPID: Int32 { PQbackendPID(handle) }

    /// Opens a session the way the pool does (same conninfo keywords, `application_name` and keepalives), within
    /// `connectTimeoutSeconds` (at least 2 s, as libpq rounds it). Nil when `stop` was signalled meanwhile.
    static func connect(_ configuration: DatabaseConfiguration, stop: StopSignal) throws -> ListenerSession? {
        let (handle, parsed) = Connector.start(configuration)
        guard let handle else { throw StoreError(.connectionFailed, "out of memory while connecting") }
        let session = ListenerSession(handle: handle)  // its deinit finishes the handle on every early exit
        guard PQstatus(handle) != CONNECTION_BAD else {
            throw Connector.failure(of: handle, configuration: configuration, parsed: parsed)
        }
        let seconds = configuration.connectTimeoutSeconds
        let deadline = Deadline(after: seconds > 0 ? .seconds(max(2, seconds)) : nil)
        // libpq's contract: behave as if PQconnectPoll had last returned PGRES_POLLING_WRITING.
        var state = PGRES_POLLING_WRITING
        while true {
            switch state {
            case PGRES_POLLING_OK:
                try Connector.prepareForUse(handle)
                return session
            case PGRES_POLLING_READING, PGRES_POLLING_WRITING:
                let events = state == PGRES_POLLING_READING ? POLLIN : POLLOUT
                switch stop.wait(socket: PQsocket(handle), events: Int16(events), milliseconds: deadline.pollTimeout())
                {
                case .stopped:
                    return nil
                case .timedOut:
                    if deadline.hasPassed() {
                        throw Connector.failure(
                            of: handle, configuration: configuration, parsed: parsed, raw: "timeout expired")
                    }
                    continue
                case .ready:
                    state = PQconnectPoll(handle)
                }
            default:
                throw Connector.failure(of: handle, configuration: configuration, parsed: parsed)
            }
        }
    }

    /// LISTENs on `channels` in one round trip, calls `listening` once they are all active, then hands each
    /// notification to `deliver` until `stop` is signalled (returns) or the session fails (throws).
    func serve(
        channels: [String], policy: ListenerLiveness.Policy, stop: StopSignal, listening: () -> Void,
        deliver: (_ channel: String, _ payload: String, _ senderPID: Int32) -> Void
    ) throws {
        // Validated names (no double quote, no NUL), so quoting is plain.
        let listen = channels.map { "LISTEN \"\($0)\"" }.joined(separator: "; ")
        var liveness = ListenerLiveness(policy: policy, now: .now)
        var listened = false
        var unsent = try send(listen)
        liveness.sent(now: .now)

        while true {
            var events = POLLIN
            let timeout: Int32
            switch liveness.next(now: .now) {
            case .presumeDead:
                throw StoreError(
                    .timeout,
                    "the database did not answer the notification listener within "
                        + policy.answerWithin.secondsDescription)
            case .sendProbe:
                unsent = try send("SELECT 1")
                liveness.sent(now: .now)
                continue
            case .wait(let milliseconds):
                timeout = milliseconds
            }
            if unsent { events |= POLLOUT }

            let revents: Int16
            switch stop.wait(socket: PQsocket(handle), events: Int16(events), milliseconds: timeout) {
            case .stopped: return
            case .timedOut: continue
            case .ready(let ready): revents = ready
            }
            if revents & Int16(POLLNVAL) != 0 { throw lost("the connection's socket is no longer valid") }
            if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                guard PQconsumeInput(handle) == 1 else { throw lost("the connection to the server was lost") }
                liveness.received(now: .now)
            }
            if unsent { unsent = try flush() }

            // The results of the LISTENs or the probe, as far as they have arrived.
            while liveness.isAwaitingAnswer, PQisBusy(handle) == 0 {
                guard let result = PQgetResult(handle) else {
                    liveness.answered(now: .now)
                    if !listened {
                        listened = true
                        listening()
                    }
                    break
                }
                defer { PQclear(result) }
                let status = PQresultStatus(result)
                guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else { throw serverError(result) }
            }
            while let notification = PQnotifies(handle) {
                let value = notification.pointee
                deliver(String(cString: value.relname), String(cString: value.extra), value.be_pid)
                PQfreemem(notification)
            }
            if PQstatus(handle) == CONNECTION_BAD { throw lost("the connection to the server was lost") }
        }
    }

    /// Queues `sql` (simple protocol) and sends what the socket takes now; true when some is still unsent.
    private func send(_ sql: String) throws -> Bool {
        guard PQsendQuery(handle, sql) == 1 else { throw lost("could not send to the server") }
        return try flush()
    }

    private func flush() throws -> Bool {
        switch PQflush(handle) {
        case 0: return false
        case 1: return true
        default: throw lost("could not send to the server")
        }
    }

    private func lost(_ message: String) -> StoreError {
        StoreError(.connectionLost, message, detail: String(cString: PQerrorMessage(handle)))
    }

    private func serverError(_ result: OpaquePointer) -> StoreError {
        let sqlState = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let detail = String(cString: PQresultErrorMessage(result))
        if PQstatus(handle) == CONNECTION_BAD || sqlState?.hasPrefix("57P") == true {
            return StoreError(
                .connectionLost, "the connection to the server was lost", sqlState: sqlState, detail: detail)
        }
        return StoreError(.server, "the server rejected the notification listener", sqlState: sqlState, detail: detail)
    }
}
