import CPostgres
import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import Synchronization

/// One libpq connection, confined to the dedicated thread of its pool slot.
///
/// You get one inside `Database.withConnection` or `Database.transaction`; do not keep it after the closure returns.
/// Every statement goes out as an unnamed extended-protocol statement (`PQexecParams`/`PQsendQueryParams`) with all
/// values bound, and no session state is set (per-user settings are transaction-local, see `asUser`), so it works
/// behind transaction poolers.
public final class DatabaseConnection {
    let handle: OpaquePointer
    let counters: DatabaseCounters

    init(handle: OpaquePointer, counters: DatabaseCounters) {
        self.handle = handle
        self.counters = counters
    }

    deinit { PQfinish(handle) }

    var isBroken: Bool { PQstatus(handle) == CONNECTION_BAD }

    /// Checks, without a round trip, that nothing arrived while the connection was idle: an idle connection only
    /// becomes readable when the server ended it (a termination notice, then EOF), so a readable socket means the
    /// connection is discarded before a statement is sent to a dead backend.
    func isAliveWithoutRoundTrip() -> Bool {
        if PQstatus(handle) != CONNECTION_OK { return false }
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, 0)
        return ready == 0
    }

    /// Runs one statement in one round trip.
    @discardableResult
    public func query(_ query: SQLQuery) throws -> QueryResult {
        try Self.checkBinds(query)
        counters.roundTrips.add(1, ordering: .relaxed)
        let result = withParameters(query.binds) { values in
            PQexecParams(handle, query.sql, Int32(values.count), nil, values, nil, nil, 0)
        }
        return try consume(result)
    }

    /// Sends `queries` in one round trip (libpq pipeline mode with one sync). The batch is one implicit transaction:
    /// when a statement fails, the whole batch is rolled back and the first error is thrown.
    public func pipeline(_ queries: [SQLQuery]) throws -> [QueryResult] {
        for query in queries { try Self.checkBinds(query) }
        guard PQenterPipelineMode(handle) == 1 else { throw connectionError("could not enter pipeline mode") }
        defer { _ = PQexitPipelineMode(handle) }
        counters.roundTrips.add(1, ordering: .relaxed)
        for query in queries {
            let sent = withParameters(query.binds) { values in
                PQsendQueryParams(handle, query.sql, Int32(values.count), nil, values, nil, nil, 0)
            }
            guard sent == 1 else { throw drainAfterFailure(connectionError("could not send a pipelined statement")) }
        }
        guard PQpipelineSync(handle) == 1 else { throw drainAfterFailure(connectionError("could not send the sync")) }

        var results: [QueryResult] = []
        var firstError: StoreError?
        for _ in queries {
            guard let result = PQgetResult(handle) else {
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
            while let extra = PQgetResult(handle) { PQclear(extra) }
        }
        // The sync marker; libpq returns it right after the last statement's NULL.
        var strayNulls = 0
        while true {
            guard let result = PQgetResult(handle) else {
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
            // the sync; end it so the connection goes back to the pool clean.
            if PQtransactionStatus(handle) != PQTRANS_IDLE, PQexitPipelineMode(handle) == 1, !isBroken {
                PQclear(PQexec(handle, "ROLLBACK"))
            }
            throw firstError
        }
        return results
    }

    /// Runs SQL text with the simple protocol (several statements allowed). Reserved for migrations: it binds nothing.
    func executeScript(_ sql: String) throws {
        counters.roundTrips.add(1, ordering: .relaxed)
        _ = try consume(PQexec(handle, sql))
    }

    private func drainAfterFailure(_ error: StoreError) -> StoreError {
        while let result = PQgetResult(handle) { PQclear(result) }
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

    /// The constraint named by a server error, e.g. to tell which unique index was violated.
    static func constraintName(of error: StoreError) -> String? {
        guard let range = error.message.range(of: "(constraint ") else { return nil }
        return String(error.message[range.upperBound...].dropLast())
    }
}
