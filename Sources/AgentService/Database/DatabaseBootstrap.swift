import Foundation
import Logging
import ThreadStore

/// Where the service's database is: `DATABASE_URL`, or the embedded local cluster when it is unset.
struct DatabaseTarget: Sendable {
    var conninfo: String
    /// Safe to print: host, port and database, never the password.
    var description: String
    var isEmbedded: Bool

    /// Resolves `DATABASE_URL`, or starts (first time: initializes) the embedded cluster under
    /// `.agent-service/postgres`. With `DATABASE_URL` set nothing is started.
    static func resolve(environment: AppEnvironment, logger: Logger) async throws -> DatabaseTarget {
        if let url = environment["DATABASE_URL"] {
            return DatabaseTarget(conninfo: url, description: describe(url), isEmbedded: false)
        }
        let embedded = EmbeddedPostgres(logger: logger)
        do {
            let running = try await embedded.startDetachedReportingDirectory()
            return DatabaseTarget(
                conninfo: running.conninfo,
                description: "embedded PostgreSQL in \(running.directory.path) (DATABASE_URL unset)",
                isEmbedded: true)
        } catch let error as StoreError {
            throw ConfigurationError(error.message)
        }
    }

    /// "postgres at host:port/dbname" from a URI or key=value conninfo, without credentials.
    static func describe(_ conninfo: String) -> String {
        if let components = URLComponents(string: conninfo), let scheme = components.scheme,
            scheme.hasPrefix("postgres")
        {
            let host = components.host ?? "localhost"
            let port = components.port.map { ":\($0)" } ?? ""
            return "postgres at \(host)\(port)\(components.path)"
        }
        var pairs: [String: String] = [:]
        for item in conninfo.split(separator: " ") {
            let parts = item.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { pairs[String(parts[0])] = String(parts[1]) }
        }
        let port = pairs["port"].map { ":\($0)" } ?? ""
        return "postgres at \(pairs["host"] ?? "localhost")\(port)/\(pairs["dbname"] ?? "")"
    }
}

/// Opens the service's database: `DATABASE_URL`, or the embedded local cluster (then always migrated).
///
/// Checks that the server answers before returning. Failures come back as one-line `ConfigurationError`s, e.g.
/// "DATABASE_URL: could not connect to host 'db' (connection refused); is Postgres running?".
/// - Returns: the pool (close it when done) and a description safe to log.
func openDatabase(
    environment: AppEnvironment, logger: Logger, poolSize: Int, migrate: Bool,
    statementTimeout: Duration = .seconds(5), acquireTimeout: Duration = .seconds(5)
) async throws -> (Database, description: String) {
    let target = try await DatabaseTarget.resolve(environment: environment, logger: logger)
    let prefix = target.isEmbedded ? "local PostgreSQL: " : "DATABASE_URL: "
    do {
        if migrate || target.isEmbedded {
            try await autoMigrate(target: target, listenURL: environment["DATABASE_LISTEN_URL"], logger: logger)
        }
        let database = Database(
            configuration: DatabaseConfiguration(
                conninfo: target.conninfo, poolSize: poolSize, statementTimeout: statementTimeout,
                acquireTimeout: acquireTimeout),
            logger: logger)
        do {
            try await database.ping()
        } catch {
            await database.close()
            throw error
        }
        return (database, target.description)
    } catch let error as StoreError {
        throw ConfigurationError(prefix + error.message)
    }
}

/// `AUTO_MIGRATE` at start-up. Migrations need a session of their own (an advisory lock), which a transaction-mode
/// pooler cannot give: when `DATABASE_URL` is one, they run over `DATABASE_LISTEN_URL` (which must be direct or
/// session-mode anyway, for `LISTEN`) when it is set, and otherwise start-up stops with a line saying what to do.
private func autoMigrate(target: DatabaseTarget, listenURL: String?, logger: Logger) async throws {
    let report: Migrator.Report
    do {
        report = try await Migrator(conninfo: target.conninfo, logger: logger).run()
    } catch let error as StoreError where error.code == .transactionPooler {
        guard let listenURL, listenURL != target.conninfo else {
            throw ConfigurationError(
                "DATABASE_URL: AUTO_MIGRATE cannot migrate here: \(error.message); run `agent-service migrate` with "
                    + "DATABASE_URL set to such a connection, or set DATABASE_LISTEN_URL to one (serve then migrates "
                    + "over it), or set AUTO_MIGRATE=false")
        }
        logger.notice("DATABASE_URL is a transaction-mode pooler; applying migrations over DATABASE_LISTEN_URL")
        do {
            report = try await Migrator(conninfo: listenURL, logger: logger).run()
        } catch let error as StoreError {
            throw ConfigurationError("DATABASE_LISTEN_URL: " + error.message)
        }
    }
    if !report.applied.isEmpty {
        logger.info("applied migrations", metadata: ["versions": "\(report.applied.joined(separator: ", "))"])
    }
}
