import CPostgres
import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import Synchronization

/// One libpq connection, confined to the dedicated thread of its pool slot.
///
/// You get one inside `Database.withConnection` or `Database.transaction`; do not keep it after the closure returns.
/// Every statement goes out as an unnamed extended-protocol statement (`PQsendQueryParams`) with all values bound,
/// and no session state is set (per-user settings are transaction-local, see `asUser`), so it works behind
/// transaction poolers.
///
/// The socket is non-blocking and every wait is a `poll()` bounded by `statementTimeout` per round trip: a server
/// that stops answering (a stopped backend still has its kernel acknowledge our bytes) costs at most that long. On
/// a missed deadline the connection is abandoned (never `PQcancel`, which blocks) and the pool slot reconnects on
/// next use.
public final class DatabaseConnection {
    let handle: OpaquePointer
    let counters: DatabaseCounters
    /// The client-side deadline of each round trip; nil for none.
    let statementTimeout: Duration?
    /// Set when a deadline passed with a round trip in flight: the protocol state is unknown, so nothing more is sent.
    private var abandoned = false

    init(handle: OpaquePointer, counters: DatabaseCounters, statementTimeout: Duration?) {
        self.handle = handle
        self.counters = counters
        self.statementTimeout = statementTimeout.flatMap { $0 > .zero ? $0 : nil }
    }

    deinit { PQfinish(handle) }

    var isBroken: Bool { abandoned || PQstatus(handle) == CONNECTION_BAD }

    /// Checks, without a round trip, that nothing arrived while the connection was idle: an idle connection only
    /// becomes readable when the server ended it (a termination notice, then EOF), so a readable socket means the
    /// connection is discarded before a statement is sent to a dead backend.
    func isAliveWithoutRoundTrip() -> Bool {
        if isBroken || PQstatus(handle) != CONNECTION_OK { return false }
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, 0)
        return ready == 0
    }

    /// Runs one statement in one round trip.
    @discardableResult
    public func query(_ query: SQLQuery) throws -> QueryResult {
        try Self.checkBinds(query)
        try checkUsable()
        counters.roundTrips.add(1, ordering: .relaxed)
        let deadline = Deadline(after: statementTimeout)
        let sent = withParameters(query.binds) { values in
            PQsendQueryParams(handle, query.sql, Int32(values.count), nil, values, nil, nil, 0)
        }
        guard sent == 1 else { throw drainAfterFailure(connectionError("could not send the statement")) }
        try flush(by: deadline)
        return try consume(try collectResults(by: deadline))
    }

    /// Sends `queries` in one round trip (libpq pipeline mode with one sync). The batch is one implicit transaction:
    /// when a statement fails, the whole batch is rolled back and the first error is thrown.
    public func pipeline(_ queries: [SQLQuery]) throws -> [QueryResult] {
        for query in queries { try Self.checkBinds(query) }
        try checkUsable()
        guard PQenterPipelineMode(handle) == 1 else { throw connectionError("could not enter pipeline mode") }
        defer { _ = PQexitPipelineMode(handle) }
        counters.roundTrips.add(1, ordering: .relaxed)
        let deadline = Deadline(after: statementTimeout)
        for query in queries {
            let sent = withParameters(query.binds) { values in
                PQsendQueryParams(handle, query.sql, Int32(values.count), nil, values, nil, nil, 0)
            }
            guard sent == 1 else { throw drainAfterFailure(connectionError("could not send a pipelined statement")) }
        }
        guard PQpipelineSync(handle) == 1 else { throw drainAfterFailure(connectionError("could not send the sync")) }
        try flush(by: deadline)

        var results: [QueryResult] = []
        var firstError: StoreError?
        for _ in queries {
            guard let result = try nextResult(by: deadline) else {
                throw connectionError("the connection closed in the middle of a pipeline")
            }
            let status = PQresultStatus(result)
            if status == PGRES_PIPELINE_ABORTED {
                PQclear(result)
            } else {
                do { results.append(try consume(result)) } catch let error as StoreError {
                    if firstError == nil { firstError = error }
                }
            }
            // Each statement's results end with a NULL.
            while let extra = try nextResult(by: deadline) { PQclear(extra) }
        }
        // The sync marker; libpq returns it right after the last statement's NULL.
        var strayNulls = 0
        while true {
            guard let result = try nextResult(by: deadline) else {
                strayNulls += 1
                if isBroken || strayNulls > 2 {
                    throw firstError ?? connectionError("the connection closed before the pipeline sync")
                }
                continue
            }
            let status = PQresultStatus(result)
            PQclear(result)
            if status == PGRES_PIPELINE_SYNC { break }
        }
        if let firstError {
            // A batch that opened its own transaction (BEGIN ... COMMIT) is left in a failed transaction block after
            // the sync; end it so the connection goes back to the pool clean. Not counted: the batch's error is what
            // the caller sees, and a ROLLBACK that cannot be sent leaves the connection to be replaced.
            if PQtransactionStatus(handle) != PQTRANS_IDLE, PQexitPipelineMode(handle) == 1, !isBroken {
                _ = try? roundTripWithoutBinds("ROLLBACK", deadline: Deadline(after: statementTimeout))
            }
            throw firstError
        }
        return results
    }

    /// Runs SQL text with the simple protocol (several statements allowed). Reserved for migrations: it binds nothing
    /// and has no client-side deadline, since a migration may legitimately run for long (its own `lock_timeout`
    /// bounds the waits that a stalled peer would cause).
    func executeScript(_ sql: String) throws {
        try checkUsable()
        counters.roundTrips.add(1, ordering: .relaxed)
        _ = try consume(try roundTripWithoutBinds(sql, deadline: Deadline(after: nil)))
    }

    /// Sends `sql` with the simple protocol and returns its result (the first error, else the last result).
    private func roundTripWithoutBinds(_ sql: String, deadline: Deadline) throws -> OpaquePointer? {
        guard PQsendQuery(handle, sql) == 1 else {
            throw drainAfterFailure(connectionError("could not send the statement"))
        }
        try flush(by: deadline)
        return try collectResults(by: deadline)
    }

    // MARK: - Waiting (non-blocking socket, bounded by the deadline)

    private func checkUsable() throws {
        if abandoned {
            throw StoreError(.connectionLost, "the connection was abandoned after the database did not answer in time")
        }
    }

    /// Reads results up to the NULL that ends a statement: the first error when there is one, else the last result
    /// (what `PQexec` returns). Frees the others.
    private func collectResults(by deadline: Deadline) throws -> OpaquePointer? {
        var kept: OpaquePointer?
        do {
            while let result = try nextResult(by: deadline) {
                if let previous = kept, PQresultStatus(previous) == PGRES_FATAL_ERROR {
                    PQclear(result)
                } else {
                    if let previous = kept { PQclear(previous) }
                    kept = result
                }
            }
        } catch {
            // A server that reports an error and then hangs up (a terminated backend) is better told by its error.
            if let kept, PQresultStatus(kept) == PGRES_FATAL_ERROR, (error as? StoreError)?.code == .connectionLost {
                return kept
            }
            if let kept { PQclear(kept) }
            throw error
        }
        return kept
    }

    /// `PQgetResult` without blocking past the deadline: waits for input while libpq says it would block.
    private func nextResult(by deadline: Deadline) throws -> OpaquePointer? {
        while PQisBusy(handle) == 1 {
            _ = try wait(for: POLLIN, by: deadline)
            guard PQconsumeInput(handle) == 1 else { throw connectionError("the connection to the server was lost") }
        }
        return PQgetResult(handle)
    }

    /// Sends everything libpq has buffered, reading input meanwhile so a server blocked on its own output can go on.
    private func flush(by deadline: Deadline) throws {
        while true {
            switch PQflush(handle) {
            case 0: return
            case 1:
                let events = try wait(for: POLLIN | POLLOUT, by: deadline)
                if events & Int16(POLLIN) != 0, PQconsumeInput(handle) != 1 {
                    throw connectionError("the connection to the server was lost")
                }
            default:
                throw connectionError("could not send to the server")
            }
        }
    }

    /// Waits until the socket is ready for `events`; on a missed deadline abandons the connection and throws
    /// `StoreError.timeout`.
    private func wait(for events: Int32, by deadline: Deadline) throws -> Int16 {
        let socket = PQsocket(handle)
        guard socket >= 0 else { throw connectionError("the connection to the server was lost") }
        while true {
            var descriptor = pollfd(fd: socket, events: Int16(events), revents: 0)
            let ready = poll(&descriptor, 1, deadline.pollTimeout())
            if ready > 0 { return descriptor.revents }
            if ready < 0 && errno != EINTR {
                throw connectionError("waiting for the server failed (\(String(cString: strerror(errno))))")
            }
            if ready == 0 && deadline.hasPassed() {
                abandoned = true
                var error = StoreError(
                    .timeout, "the database did not answer within \(deadline.limit?.secondsDescription ?? "")")
                error.detail = "client-side deadline; the connection is closed and the pool slot reconnects"
                throw error
            }
        }
    }

    /// Discards what a failed send left behind, within a short deadline of its own, and returns `error`.
    private func drainAfterFailure(_ error: StoreError) -> StoreError {
        let deadline = Deadline(after: statementTimeout ?? .seconds(10))
        while let result = try? nextResult(by: deadline) { PQclear(result) }
        return error
    }

    private static func checkBinds(_ query: SQLQuery) throws {
        for case let value? in query.binds where value.utf8.contains(0) {
            throw StoreError(
                .invalidText, "a query parameter contains a NUL byte (U+0000), which Postgres text cannot store")
        }
    }

    private func withParameters<R>(_ binds: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        let copies: [UnsafeMutablePointer<CChar>?] = binds.map { $0.map { strdup($0)! } }
        defer { for pointer in copies { free(pointer) } }
        return body(copies.map { $0.map { UnsafePointer($0) } })
    }

    private func connectionError(_ message: String) -> StoreError {
        StoreError(.connectionLost, message, detail: String(cString: PQerrorMessage(handle)))
    }

    /// Turns a libpq result into rows or a `StoreError`, freeing it either way.
    private func consume(_ result: OpaquePointer?) throws -> QueryResult {
        guard let result else {
            throw StoreError(
                isBroken ? .connectionLost : .server, "no result from the server",
                detail: String(cString: PQerrorMessage(handle)))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            let rowCount = Int(PQntuples(result))
            let columnCount = Int(PQnfields(result))
            var columns: [String] = []
            columns.reserveCapacity(columnCount)
            for column in 0..<columnCount { columns.append(String(cString: PQfname(result, Int32(column)))) }
            var rows: [[String?]] = []
            rows.reserveCapacity(rowCount)
            for row in 0..<rowCount {
                var values: [String?] = []
                values.reserveCapacity(columnCount)
                for column in 0..<columnCount {
                    if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                        values.append(nil)
                    } else {
                        values.append(String(cString: PQgetvalue(result, Int32(row), Int32(column))))
                    }
                }
                rows.append(values)
            }
            let affected = Int(String(cString: PQcmdTuples(result))) ?? rowCount
            return QueryResult(columns: columns, rows: rows, affectedRows: affected)
        default:
            throw serverError(result)
        }
    }

    private func serverError(_ result: OpaquePointer) -> StoreError {
        func field(_ code: Int32) -> String? {
            guard let pointer = PQresultErrorField(result, code) else { return nil }
            return String(cString: pointer)
        }
        let sqlState = field(Int32(UInt8(ascii: "C")))  // PG_DIAG_SQLSTATE
        let primary = field(Int32(UInt8(ascii: "M"))) ?? String(cString: PQresultErrorMessage(result))
        let constraint = field(Int32(UInt8(ascii: "n")))  // PG_DIAG_CONSTRAINT_NAME
        if isBroken && (sqlState == nil || sqlState!.hasPrefix("57P") || sqlState!.hasPrefix("08")) {
            return StoreError(
                .connectionLost, "the connection to the server was lost", sqlState: sqlState, detail: primary)
        }
        var message = "the server rejected the statement"
        if let constraint { message += " (constraint \(constraint))" }
        return StoreError(.server, message, sqlState: sqlState, detail: primary)
    }

}
