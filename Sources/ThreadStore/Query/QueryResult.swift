public import Foundation

/// The rows of one statement, copied out of libpq in text format.
public struct QueryResult: Sendable {
    /// Column names in select-list order.
    public var columns: [String]
    /// Each row's values in text format; `nil` is SQL NULL.
    public var rows: [[String?]]
    /// Rows touched by INSERT/UPDATE/DELETE (libpq's `PQcmdTuples`), or the number of rows returned.
    public var affectedRows: Int

    /// The value at `row`, `column` as text; nil for SQL NULL or a missing row or column.
    public func string(_ row: Int, _ column: Int) -> String? {
        guard rows.indices.contains(row), rows[row].indices.contains(column) else { return nil }
        return rows[row][column]
    }

    /// The value at `row`, `column` as an integer.
    public func int(_ row: Int, _ column: Int) -> Int? { string(row, column).flatMap { Int($0) } }

    /// The value at `row`, `column` as a boolean (`t`/`f`).
    public func bool(_ row: Int, _ column: Int) -> Bool? { string(row, column).map { $0 == "t" } }

    /// The value at `row`, `column` as a UUID.
    public func uuid(_ row: Int, _ column: Int) -> UUID? { string(row, column).flatMap { UUID(uuidString: $0) } }

    /// A timestamp selected as `extract(epoch from ...)` (seconds since 1970, microsecond precision).
    public func epochDate(_ row: Int, _ column: Int) -> Date? {
        string(row, column).flatMap { Double($0) }.map { Date(timeIntervalSince1970: $0) }
    }
}
