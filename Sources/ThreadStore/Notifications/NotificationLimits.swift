/// What Postgres accepts as a notification channel and payload, checked before any I/O.
enum NotificationLimits {
    /// Identifiers longer than NAMEDATALEN - 1 bytes are truncated by the server (and `pg_notify` refuses them).
    static let maximumChannelBytes = 63
    /// `pg_notify` refuses payloads of 8000 bytes or more (`NOTIFY_PAYLOAD_MAX_LENGTH`).
    static let payloadBytesLimit = 8000

    /// A channel name: 1 to 63 bytes of UTF-8 without NUL or double quote (so it can be quoted as an identifier).
    static func checkChannel(_ channel: String) throws {
        let bytes = channel.utf8.count
        guard (1...maximumChannelBytes).contains(bytes) else {
            throw StoreError(
                .invalidArgument,
                "a notification channel name must be 1 to \(maximumChannelBytes) bytes of UTF-8 (got \(bytes))")
        }
        guard !channel.utf8.contains(0), !channel.contains("\"") else {
            throw StoreError(
                .invalidArgument, "a notification channel name must not contain a NUL byte or a double quote")
        }
    }

    /// A payload: fewer than 8000 bytes of UTF-8, no NUL.
    static func checkPayload(_ payload: String) throws {
        let bytes = payload.utf8.count
        guard bytes < payloadBytesLimit else {
            throw StoreError(
                .invalidArgument,
                "a notification payload must be shorter than \(payloadBytesLimit) bytes of UTF-8 (got \(bytes)); "
                    + "send a key and keep the data in a table")
        }
        guard !payload.utf8.contains(0) else {
            throw StoreError(.invalidArgument, "a notification payload must not contain a NUL byte (U+0000)")
        }
    }
}
