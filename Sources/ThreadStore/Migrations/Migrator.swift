import Foundation
public import Logging

/// Applies migrations safely when several instances start at once, compatible with the Supabase CLI's history.
///
/// Over one dedicated connection it polls `pg_try_advisory_lock` with jittered sleeps (never blocking inside a
/// transaction), creates its bookkeeping only while holding the lock (`supabase_migrations.schema_migrations` exactly
/// as the CLI does, plus the sidecar `supabase_migrations.agent_service_migrations` with SHA-256 checksums), and
/// applies each pending file in its own transaction. It refuses to run when an applied file was edited.
/// Connect directly or through a session pooler: session advisory locks do not survive transaction pooling. A
/// transaction-mode pooler is refused before anything is locked or written, whatever its port (see
/// `refuseTransactionPooler(on:)`).
public struct Migrator: Sendable {
    /// The migrations to apply, sorted by version.
    public var migrations: [Migration]
    /// The connection string (a dedicated connection is opened per run).
    public var conninfo: String
    /// How long to wait for another instance holding the lock.
    public var lockTimeout: Duration
    let logger: Logger

    /// The advisory lock key shared by every agent-service migrator ("agentsvc" in ASCII).
    static let lockKey: Int64 = 0x6167_656E_7473_7663

    /// Whether a version is applied, pending or applied with different contents.
    public enum State: String, Sendable {
        case applied, pending, modified
        /// Recorded in the database but missing from the local files.
        case missingLocally = "missing locally"
    }

    /// One line of `migrate --status`.
    public struct Status: Sendable, Hashable {
        public var version: String
        public var name: String
        public var state: State
    }

    /// The outcome of `run()`.
    public struct Report: Sendable {
        /// The versions this run applied, in order.
        public var applied: [String]
        /// How many were already applied.
        public var alreadyApplied: Int
    }

    public init(
        migrations: [Migration] = Migration.bundled, conninfo: String, lockTimeout: Duration = .seconds(600),
        logger: Logger
    ) {
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.conninfo = conninfo
        self.lockTimeout = lockTimeout
        self.logger = logger
    }

    /// Applies every pending migration; see the type's documentation.
    public func run() async throws -> Report {
        try checkLocalFiles()
        try Self.refuseTransactionPooler(conninfo)
        return try await withDedicatedConnection { connection in
            try self.refuseTransactionPooler(on: connection)
            return try self.apply(on: connection)
        }
    }

    /// Each local and recorded version with its state; reads without taking the lock and changes nothing.
    public func status() async throws -> [Status] {
        try checkLocalFiles()
        return try await withDedicatedConnection { connection in
            let recorded = try Self.recorded(on: connection)
            var result = migrations.map { migration -> Status in
                guard let entry = recorded[migration.version] else {
                    return Status(version: migration.version, name: migration.name, state: .pending)
                }
                let modified = entry.checksum.map { $0 != migration.checksum } ?? false
                return Status(version: migration.version, name: migration.name, state: modified ? .modified : .applied)
            }
            let local = Set(migrations.map(\.version))
            for (version, entry) in recorded where !local.contains(version) {
                result.append(Status(version: version, name: entry.name ?? "", state: .missingLocally))
            }
            return result.sorted { $0.version < $1.version }
        }
    }

    // MARK: - Steps (on the dedicated connection's thread)

    private func apply(on connection: DatabaseConnection) throws -> Report {
        try acquireLock(on: connection)
        defer { _ = try? connection.query("SELECT pg_advisory_unlock(\(Self.lockKey)::bigint)") }

        try connection.executeScript(
            """
            BEGIN;
            SET LOCAL lock_timeout = '4s';
            CREATE SCHEMA IF NOT EXISTS supabase_migrations;
            CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY);
            ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[];
            ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text;
            CREATE TABLE IF NOT EXISTS supabase_migrations.agent_service_migrations (
                version text PRIMARY KEY,
                checksum text NOT NULL,
                applied_at timestamptz DEFAULT now(),
                duration_ms int
            );
            COMMIT;
            """)

        let recorded = try Self.recorded(on: connection)
        let local = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0) })
        for version in recorded.keys.sorted() where local[version] == nil {
            throw StoreError(
                .migration,
                "version \(version) is recorded as applied but no migration file has it; restore the file "
                    + "(or run `supabase migration repair --status reverted \(version)`)")
        }
        for migration in migrations {
            if let checksum = recorded[migration.version]?.checksum, checksum != migration.checksum {
                throw StoreError(
                    .migration,
                    "\(migration.fileName) was edited after it was applied (its SHA-256 differs from the recorded "
                        + "one); restore it and put the change in a new migration")
            }
        }
        let newestApplied = recorded.keys.max()
        let pending = migrations.filter { recorded[$0.version] == nil }
        if let newestApplied, let stale = pending.first(where: { $0.version < newestApplied }) {
            throw StoreError(
                .migration,
                "\(stale.fileName) is older than the newest applied version \(newestApplied); give it a newer version")
        }

        var applied: [String] = []
        for migration in pending where try applyOne(migration, on: connection) {
            applied.append(migration.version)
        }
        return Report(applied: applied, alreadyApplied: migrations.count - pending.count)
    }

    /// Applies one file in its own transaction; false when another instance recorded it meanwhile.
    private func applyOne(_ migration: Migration, on connection: DatabaseConnection) throws -> Bool {
        let clock = ContinuousClock()
        let start = clock.now
        try connection.query("BEGIN")
        do {
            try connection.query("SET LOCAL lock_timeout = '5s'")
            let present = try connection.query(
                "SELECT 1 FROM supabase_migrations.schema_migrations WHERE version = \(migration.version)")
            if !present.rows.isEmpty {
                try connection.query("ROLLBACK")
                return false
            }
            do { try connection.executeScript(migration.sql) } catch let error as StoreError {
                var failure = StoreError(
                    .migration, "\(migration.fileName) failed: \(error.detail ?? error.message)",
                    sqlState: error.sqlState, detail: error.detail)
                failure.transient = error.isTransient
                throw failure
            }
            let elapsed = clock.now - start
            let milliseconds = elapsed.milliseconds
            try connection.query(
                """
                INSERT INTO supabase_migrations.schema_migrations (version, name, statements)
                VALUES (\(migration.version), \(migration.name), \([migration.sql])::text[])
                """)
            try connection.query(
                """
                INSERT INTO supabase_migrations.agent_service_migrations (version, checksum, duration_ms)
                VALUES (\(migration.version), \(migration.checksum), \(milliseconds)::int)
                """)
            try connection.query("COMMIT")
            logger.info("applied migration", metadata: ["file": "\(migration.fileName)", "ms": "\(milliseconds)"])
            return true
        } catch {
            if !connection.isBroken { _ = try? connection.query("ROLLBACK") }
            throw error
        }
    }

    private func acquireLock(on connection: DatabaseConnection) throws {
        let clock = ContinuousClock()
        let deadline = clock.now + lockTimeout
        var announced = false
        while true {
            let result = try connection.query("SELECT pg_try_advisory_lock(\(Self.lockKey)::bigint)")
            if result.bool(0, 0) == true { return }
            if clock.now >= deadline {
                throw StoreError(
                    .migration, "another migrator held the migration lock for longer than \(lockTimeout); giving up")
            }
            if !announced {
                logger.info("another instance is migrating; waiting for its lock")
                announced = true
            }
            Thread.sleep(forTimeInterval: Double.random(in: 0.05...0.5))
        }
    }

    private struct Recorded {
        var name: String?
        var checksum: String?
    }

    private static func recorded(on connection: DatabaseConnection) throws -> [String: Recorded] {
        let exists = try connection.query(
            """
            SELECT to_regclass('supabase_migrations.schema_migrations') IS NOT NULL,
                   to_regclass('supabase_migrations.agent_service_migrations') IS NOT NULL
            """)
        guard exists.bool(0, 0) == true else { return [:] }
        let hasSidecar = exists.bool(0, 1) == true
        let rows = try connection.query(
            hasSidecar
                ? """
                SELECT m.version, m.name, s.checksum FROM supabase_migrations.schema_migrations m
                LEFT JOIN supabase_migrations.agent_service_migrations s ON s.version = m.version
                """
                : "SELECT version, name, NULL::text FROM supabase_migrations.schema_migrations")
        var result: [String: Recorded] = [:]
        for row in rows.rows {
            guard let version = row[0] else { continue }
            result[version] = Recorded(name: row[1], checksum: row[2])
        }
        return result
    }

    private func checkLocalFiles() throws {
        var seen = Set<String>()
        for migration in migrations {
            guard seen.insert(migration.version).inserted else {
                throw StoreError(.migration, "two migration files share version \(migration.version)")
            }
            for line in migration.sql.split(whereSeparator: \.isNewline) {
                let statement = line.trimmingCharacters(in: .whitespaces).lowercased()
                if ["begin;", "commit;", "rollback;", "start transaction;"].contains(statement) {
                    throw StoreError(
                        .migration,
                        "\(migration.fileName) controls transactions itself (\(statement)); each file already runs "
                            + "in its own transaction, so remove that line")
                }
            }
        }
    }

    /// The refusal both checks give: one line saying what is wrong and what to do.
    static func poolerRefusal(_ evidence: String) -> StoreError {
        StoreError(
            .transactionPooler,
            "this connection goes through a transaction-mode pooler (\(evidence)), where the migration lock does not "
                + "hold; run migrations over a direct connection or a session-mode pooler (Supabase: port 5432)")
    }

    /// Supabase's transaction pooler by its port, before connecting.
    static func refuseTransactionPooler(_ conninfo: String) throws {
        guard let parsed = Connector.parse(conninfo) else { return }
        if parsed["port"]?.split(separator: ",").contains("6543") == true {
            throw poolerRefusal("port 6543 is Supabase's transaction pooler")
        }
    }

    /// Any transaction-mode pooler, by what it does: it hands one server backend to different client connections
    /// in turn, and may move one client connection between backends. A second client connection is opened next to
    /// `connection` and both ask for `pg_backend_pid()` a few times; over a direct or session-mode connection each
    /// client keeps its own backend, so the pids never repeat across them and never change within one.
    func refuseTransactionPooler(on connection: DatabaseConnection) throws {
        let configuration = DatabaseConfiguration(
            conninfo: conninfo, poolSize: 1, applicationName: "agent-service-migrate")
        let other = try Connector.open(configuration, counters: DatabaseCounters())
        func backend(_ on: DatabaseConnection) throws -> Int? {
            try on.query("SELECT pg_backend_pid()").int(0, 0)
        }
        guard let first = try backend(connection) else { return }
        for _ in 0..<4 {
            if let seen = try backend(other), seen == first {
                throw Self.poolerRefusal("two client connections were served by the same server backend")
            }
            if let again = try backend(connection), again != first {
                throw Self.poolerRefusal("one client connection was moved between server backends")
            }
        }
    }

    private func withDedicatedConnection<T: Sendable>(
        _ body: @escaping @Sendable (DatabaseConnection) throws -> T
    ) async throws -> T {
        let database = Database(
            configuration: DatabaseConfiguration(
                conninfo: conninfo, poolSize: 1, applicationName: "agent-service-migrate"),
            logger: logger)
        do {
            let value = try await database.withConnection(body)
            await database.close()
            return value
        } catch {
            await database.close()
            throw error
        }
    }
}
