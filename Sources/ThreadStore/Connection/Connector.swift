import CPostgres
import Foundation
import Synchronization

/// Opens libpq connections and explains failures in one line without echoing the password.
enum Connector {
    /// TCP keepalives notice a peer that vanished while a connection sat idle in the pool (first probe after 30 s,
    /// then every 10 s, dropped after 3 misses), and `tcp_user_timeout` drops a connection whose sent bytes stay
    /// unacknowledged for 30 s (a network partition mid-statement). Both are client socket options that libpq
    /// ignores for Unix sockets; a stopped server whose kernel still acknowledges is the statement deadline's job.
    static let socketDefaults: [(key: String, value: String)] = [
        ("keepalives", "1"), ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3"),
        ("tcp_user_timeout", "30000"),
    ]

    static func open(_ configuration: DatabaseConfiguration, counters: DatabaseCounters) throws -> DatabaseConnection {
        let parsed = parse(configuration.conninfo)
        let parameters = parameters(for: configuration, parsed: parsed)
        let handle: OpaquePointer? = withCStrings(parameters.map(\.key)) { keyPointers in
            withCStrings(parameters.map(\.value)) { valuePointers in
                PQconnectdbParams(keyPointers, valuePointers, 1)
            }
        }
        guard let handle else { throw StoreError(.connectionFailed, "out of memory while connecting") }
        guard PQstatus(handle) == CONNECTION_OK else {
            let error = failure(of: handle, configuration: configuration, parsed: parsed)
            PQfinish(handle)
            throw error
        }
        do { try prepareForUse(handle) } catch {
            PQfinish(handle)
            throw error
        }
        counters.connectionsOpened.add(1, ordering: .relaxed)
        return DatabaseConnection(handle: handle, counters: counters, statementTimeout: configuration.statementTimeout)
    }

    /// Starts a connection attempt without blocking on the network (`PQconnectStartParams`, same keywords as `open`);
    /// the caller drives `PQconnectPoll`, enforces the connect timeout, then calls `prepareForUse`. Nil when out of
    /// memory. Resolving a host name may still block.
    static func start(_ configuration: DatabaseConfiguration) -> (handle: OpaquePointer?, parsed: [String: String]?) {
        let parsed = parse(configuration.conninfo)
        let parameters = parameters(for: configuration, parsed: parsed)
        let handle: OpaquePointer? = withCStrings(parameters.map(\.key)) { keyPointers in
            withCStrings(parameters.map(\.value)) { valuePointers in
                PQconnectStartParams(keyPointers, valuePointers, 1)
            }
        }
        return (handle, parsed)
    }

    /// The one-line explanation of a failed connection attempt on `handle` (see `describeFailure`).
    static func failure(
        of handle: OpaquePointer, configuration: DatabaseConfiguration, parsed: [String: String]?,
        raw: String? = nil
    ) -> StoreError {
        let raw = raw ?? String(cString: PQerrorMessage(handle))
        let host = PQhost(handle).map { String(cString: $0) } ?? parsed?["host"] ?? "localhost"
        return describeFailure(raw, host: host, configuration: configuration, parsed: parsed)
    }

    /// Settings every connection gets once it is established.
    static func prepareForUse(_ handle: OpaquePointer) throws {
        // Every wait is a poll() bounded by a deadline; libpq must never block in send() on its own, and PQfinish of
        // an abandoned connection must not block on a full socket buffer either.
        guard PQsetnonblocking(handle, 1) == 0 else {
            throw StoreError(
                .connectionFailed, "could not switch the connection to non-blocking mode",
                detail: String(cString: PQerrorMessage(handle)))
        }
        // Server notices ("relation already exists, skipping") would otherwise go to stderr.
        _ = PQsetNoticeProcessor(handle, { _, _ in }, nil)
    }

    /// The keywords passed to `PQconnectdbParams`: the conninfo (expanded as `dbname`), then ours where the
    /// conninfo leaves them unset (later keys would override the expanded ones).
    static func parameters(
        for configuration: DatabaseConfiguration, parsed: [String: String]?
    ) -> [(key: String, value: String)] {
        let ours: [(key: String, value: String)] =
            [
                ("connect_timeout", String(configuration.connectTimeoutSeconds)),
                ("application_name", configuration.applicationName),
            ] + socketDefaults
        return [("dbname", configuration.conninfo)] + ours.filter { parsed?[$0.key] == nil }
    }

    /// The key/value pairs of a conninfo or URI, or nil when libpq cannot parse it.
    static func parse(_ conninfo: String) -> [String: String]? {
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &error) else {
            if let error { PQfreemem(error) }
            return nil
        }
        defer { PQconninfoFree(options) }
        var result: [String: String] = [:]
        var cursor = options
        while let keyword = cursor.pointee.keyword {
            if let value = cursor.pointee.val { result[String(cString: keyword)] = String(cString: value) }
            cursor += 1
        }
        return result
    }

    static func describeFailure(
        _ raw: String, host: String, configuration: DatabaseConfiguration, parsed: [String: String]?
    ) -> StoreError {
        let lower = raw.lowercased()
        let place = host.hasPrefix("/") ? "socket directory '\(host)'" : "host '\(host)'"
        let user = parsed?["user"] ?? "(default user)"
        let database = parsed?["dbname"] ?? user
        if parsed == nil {
            return StoreError(.invalidArgument, "the connection string is not valid libpq syntax", detail: raw)
        }
        let reason: String
        var transient = true
        if lower.contains("connection refused") {
            reason = "could not connect to \(place) (connection refused); is Postgres running?"
        } else if lower.contains("no such file or directory") && host.hasPrefix("/") {
            reason = "could not connect to \(place) (no server socket there); is Postgres running?"
        } else if lower.contains("timeout expired") {
            reason = "could not connect to \(place) (no answer within \(configuration.connectTimeoutSeconds) s)"
        } else if lower.contains("could not translate host name") {
            reason = "could not connect to host '\(host)' (unknown host name)"
            transient = false
        } else if lower.contains("no password supplied") {
            reason = "\(place) asks user '\(user)' for a password and the connection string has none"
            transient = false
        } else if lower.contains("password authentication failed") || lower.contains("authentication failed") {
            reason = "authentication failed for user '\(user)' at \(place)"
            transient = false
        } else if lower.contains("does not exist") && lower.contains("database") {
            reason = "database '\(database)' does not exist at \(place)"
            transient = false
        } else if lower.contains("the database system is starting up")
            || lower.contains("the database system is shutting down")
        {
            reason = "the server at \(place) is starting up or shutting down; try again"
        } else {
            let firstLine = raw.split(separator: "\n").first.map(String.init) ?? raw
            reason = "could not connect to \(place): \(firstLine.trimmingCharacters(in: .whitespaces))"
        }
        var error = StoreError(.connectionFailed, reason, detail: raw)
        error.transient = transient
        return error
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        let copies = strings.map { strdup($0) }
        defer { for copy in copies { free(copy) } }
        var pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) }
        pointers.append(nil)
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
