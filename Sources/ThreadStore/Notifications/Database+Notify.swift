extension Database {
    /// Sends a Postgres notification (`pg_notify`) on a pooled connection, in one round trip.
    ///
    /// It runs in a transaction of its own, so every `NotificationListener` on `channel` (in any process connected to
    /// the same database) receives it right away. Postgres delivers notifications from one session in the order they
    /// were sent; it folds identical channel and payload pairs sent in one transaction into one.
    ///
    /// ```swift
    /// try await database.notify(channel: "turns", payload: #"{"cancel":"\#(turnID)"}"#)
    /// ```
    /// - Parameters:
    ///   - channel: 1 to 63 bytes of UTF-8, no NUL or double quote; matched exactly (case-sensitive).
    ///   - payload: fewer than 8000 bytes of UTF-8, no NUL.
    /// - Throws: `StoreError.invalidArgument` before any I/O when a value is out of range; otherwise the errors of
    ///   `withConnection`.
    public func notify(channel: String, payload: String) async throws {
        try NotificationLimits.checkChannel(channel)
        try NotificationLimits.checkPayload(payload)
        _ = try await withConnection { try $0.query("SELECT pg_notify(\(channel), \(payload))") }
    }
}
