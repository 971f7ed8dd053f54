import CPostgres
import Foundation
import Synchronization

/// Opens libpq connections and explains failures in one line without echoing the password.
enum Connector {
    static func open(_ configuration: DatabaseConfiguration, counters: DatabaseCounters) throws -> DatabaseConnection {
        let keys = ["dbname", "connect_timeout", "application_name"]
        let values = [
            configuration.conninfo, String(configuration.connectTimeoutSeconds), configuration.applicationName,
        ]
        // expand_dbname=1 expands the conninfo/URI given as "dbname"; later keys would override it, so ours are
        // passed only where the conninfo leaves them unset.
        let parsed = parse(configuration.conninfo)
        var useKeys = ["dbname"]
        var useValues = [values[0]]
        for (index, key) in keys.enumerated().dropFirst() where parsed?[key] == nil {
            useKeys.append(key)
            useValues.append(values[index])
        }
        let handle: OpaquePointer? = withCStrings(useKeys) { keyPointers in
            withCStrings(useValues) { valuePointers in
                PQconnectdbParams(keyPointers, valuePointers, 1)
            }
        }
        guard let handle else { throw StoreError(.connectionFailed, "out of memory while connecting") }
        guard PQstatus(handle) == CONNECTION_OK else {
            let raw = String(cString: PQerrorMessage(handle))
            let host = PQhost(handle).map { String(cString: $0) } ?? parsed?["host"] ?? "localhost"
            PQfinish(handle)
            throw describeFailure(raw, host: host, configuration: configuration, parsed: parsed)
        }
        // Server notices ("relation already exists, skipping") would otherwise go to stderr.
        _ = PQsetNoticeProcessor(handle, { _, _ in }, nil)
        counters.connectionsOpened.add(1, ordering: .relaxed)
        return DatabaseConnection(handle: handle, counters: counters)
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
