import Foundation
import TestSupport
import Testing
import ThreadStore

/// The package root, found from this file's path (Tests/ThreadStoreTests/MigratorTests.swift).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

func countRows(_ conninfo: String, _ sql: String) async throws -> Int {
    let database = Database(
        configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger)
    defer { Task { await database.close() } }
    let result = try await database.withConnection { try $0.query(SQLQuery(unsafeSQL: sql)) }
    await database.close()
    return result.int(0, 0) ?? -1
}

func temporaryMigrationsFolder() throws -> URL {
    let folder = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("migrations-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    for migration in Migration.bundled {
        try Data(migration.sql.utf8).write(to: folder.appendingPathComponent(migration.fileName))
    }
    return folder
}

@Suite(.timeLimit(.minutes(2))) struct MigratorTests {
    @Test("the migrations embedded in the binary equal the files in Migrations/")
    func embeddedEqualsDisk() throws {
        let onDisk = try Migration.load(from: packageRoot.appendingPathComponent("Migrations"))
        #expect(!onDisk.isEmpty)
        #expect(onDisk == Migration.bundled)
        #expect(Migration.bundled.map(\.version) == Migration.bundled.map(\.version).sorted())
    }

    @Test("migrate applies every file to an empty database, then nothing; status lists each as applied")
    func appliesOnce() async throws {
        let conninfo = try await TestPostgres.emptyDatabase()
        let migrator = Migrator(conninfo: conninfo, logger: TestPostgres.logger)
        #expect(try await migrator.status().allSatisfy { $0.state == .pending })
        let first = try await migrator.run()
        #expect(first.applied == Migration.bundled.map(\.version))
        let second = try await migrator.run()
        #expect(second.applied.isEmpty)
        #expect(second.alreadyApplied == Migration.bundled.count)
        let status = try await migrator.status()
        #expect(status.map(\.version) == Migration.bundled.map(\.version))
        #expect(status.allSatisfy { $0.state == .applied })
        let recorded = try await countRows(
            conninfo,
            "SELECT count(*) FROM supabase_migrations.schema_migrations m JOIN supabase_migrations.agent_service_migrations s USING (version)"
        )
        #expect(recorded == Migration.bundled.count)
    }

    @Test("four migrators started at the same moment all succeed and record each version once")
    func concurrentMigrators() async throws {
        let conninfo = try await TestPostgres.emptyDatabase()
        let reports = try await withThrowingTaskGroup(of: Migrator.Report.self) { group in
            for _ in 0..<4 {
                group.addTask { try await Migrator(conninfo: conninfo, logger: TestPostgres.logger).run() }
            }
            var all: [Migrator.Report] = []
            for try await report in group { all.append(report) }
            return all
        }
        #expect(reports.count == 4)
        #expect(reports.flatMap(\.applied).sorted() == Migration.bundled.map(\.version))
        #expect(
            try await countRows(conninfo, "SELECT count(*) FROM supabase_migrations.schema_migrations")
                == Migration.bundled.count)
    }

    @Test(
        "four `agent-service migrate` processes at once all exit 0 and record each version once",
        .enabled(
            if: FileManager.default.isExecutableFile(
                atPath: packageRoot.appendingPathComponent(".build/debug/agent-service").path)))
    func concurrentProcesses() async throws {
        let conninfo = try await TestPostgres.emptyDatabase()
        let binary = packageRoot.appendingPathComponent(".build/debug/agent-service")
        let workdir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent(
            "migrate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: workdir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: workdir) }
        let codes = try await withThrowingTaskGroup(of: Int32.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let process = try SpawnedProcess(
                        executable: binary.path, arguments: ["migrate"],
                        environment: ["DATABASE_URL": conninfo, "PATH": "/usr/bin:/bin"],
                        currentDirectory: workdir.path)
                    return try await process.waitForExit()
                }
            }
            var all: [Int32] = []
            for try await code in group { all.append(code) }
            return all
        }
        #expect(codes == [0, 0, 0, 0])
        #expect(
            try await countRows(conninfo, "SELECT count(*) FROM supabase_migrations.schema_migrations")
                == Migration.bundled.count)
        #expect(
            try await countRows(conninfo, "SELECT count(*) FROM supabase_migrations.agent_service_migrations")
                == Migration.bundled.count)
    }

    @Test("editing an applied migration makes migrate refuse with a message naming the file")
    func editedMigrationRefused() async throws {
        let conninfo = try await TestPostgres.emptyDatabase()
        let folder = try temporaryMigrationsFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try await Migrator(
            migrations: try Migration.load(from: folder), conninfo: conninfo, logger: TestPostgres.logger
        ).run()

        let edited = try #require(Migration.bundled.first)
        try Data((edited.sql + "\n-- a harmless looking edit\n").utf8).write(
            to: folder.appendingPathComponent(edited.fileName))
        let migrator = Migrator(
            migrations: try Migration.load(from: folder), conninfo: conninfo, logger: TestPostgres.logger)
        do {
            _ = try await migrator.run()
            Issue.record("an edited applied migration must be refused")
        } catch let error as StoreError {
            #expect(error.code == .migration)
            #expect(error.message.contains(edited.fileName))
        }
        #expect(try await migrator.status().first?.state == .modified)
    }

    @Test("a failing migration rolls back completely, names the file, and is not recorded")
    func failingMigrationRollsBack() async throws {
        let conninfo = try await TestPostgres.emptyDatabase()
        let folder = try temporaryMigrationsFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let bad = "29991231000000_broken.sql"
        try Data("CREATE TABLE half_done (id int);\nSELECT no_such_function();\n".utf8).write(
            to: folder.appendingPathComponent(bad))
        do {
            _ = try await Migrator(
                migrations: try Migration.load(from: folder), conninfo: conninfo, logger: TestPostgres.logger
            ).run()
            Issue.record("expected failure")
        } catch let error as StoreError {
            #expect(error.message.contains(bad))
        }
        #expect(
            try await countRows(conninfo, "SELECT count(*) FROM supabase_migrations.schema_migrations")
                == Migration.bundled.count)
        #expect(try await countRows(conninfo, "SELECT count(*) FROM pg_class WHERE relname = 'half_done'") == 0)
    }

    @Test("where Supabase's auth schema exists, authenticated users get read and delete policies only")
    func rowLevelSecurityOnSupabase() async throws {
        let conninfo = try await TestPostgres.emptyDatabase()
        let database = Database(
            configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger)
        _ = try await database.withConnection { connection in
            try connection.query(
                """
                DO $$ BEGIN
                  BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
                END $$
                """)
            try connection.query("CREATE SCHEMA auth")
            try connection.query(
                "CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$"
            )
        }
        await database.close()
        _ = try await Migrator(conninfo: conninfo, logger: TestPostgres.logger).run()
        // The first wave's FOR ALL policies were replaced: SELECT and DELETE for authenticated, ALL for the service role.
        #expect(
            try await countRows(
                conninfo,
                "SELECT count(*) FROM pg_policies WHERE tablename IN ('threads', 'turns') AND 'authenticated' = ANY(roles) AND cmd IN ('SELECT', 'DELETE')"
            ) == 4)
        #expect(
            try await countRows(
                conninfo,
                "SELECT count(*) FROM pg_policies WHERE 'authenticated' = ANY(roles) AND cmd NOT IN ('SELECT', 'DELETE')")
                == 0)
        #expect(
            try await countRows(conninfo, "SELECT count(*) FROM pg_policies WHERE 'agent_service_user' = ANY(roles)") == 2)
        #expect(
            try await countRows(
                conninfo, "SELECT count(*) FROM pg_class WHERE relname IN ('threads', 'turns') AND relrowsecurity") == 2
        )
        // Plain Postgres gets RLS and the service role's policies too.
        let plain = try await TestPostgres.emptyDatabase()
        _ = try await Migrator(conninfo: plain, logger: TestPostgres.logger).run()
        #expect(try await countRows(plain, "SELECT count(*) FROM pg_policies WHERE 'agent_service_user' = ANY(roles)") == 2)
        #expect(
            try await countRows(
                plain, "SELECT count(*) FROM pg_class WHERE relname IN ('threads', 'turns') AND relrowsecurity") == 2)
    }
}

@Suite("Migrations through a real PgBouncer", .serialized, .timeLimit(.minutes(2)))
struct MigratorPoolerTests {
    @Test("a transaction-mode PgBouncer is refused whatever its port, before anything is locked or written")
    func refusesTransactionPooler() async throws {
        let direct = try await TestPostgres.emptyDatabase()
        let pooler = try await PgBouncer.start(for: direct, mode: "transaction")
        defer { Task { await pooler.stop() } }
        let migrator = Migrator(conninfo: pooler.conninfo(for: direct), logger: TestPostgres.logger)
        do {
            _ = try await migrator.run()
            Issue.record("migrated through a transaction pooler")
        } catch let error as StoreError {
            #expect(error.code == .transactionPooler)
            #expect(error.message.contains("direct connection or a session-mode pooler"))
        }
        #expect(try await countRows(direct, "SELECT (to_regclass('supabase_migrations.schema_migrations') IS NULL)::int") == 1)
        #expect(try await countRows(direct, "SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == 0)
        await pooler.stop()
    }

    @Test("a session-mode PgBouncer and a direct connection migrate")
    func sessionPoolerAndDirectMigrate() async throws {
        let direct = try await TestPostgres.emptyDatabase()
        let pooler = try await PgBouncer.start(for: direct, mode: "session")
        let report = try await Migrator(conninfo: pooler.conninfo(for: direct), logger: TestPostgres.logger).run()
        #expect(report.applied == Migration.bundled.map(\.version))
        await pooler.stop()
        let other = try await TestPostgres.emptyDatabase()
        #expect(try await Migrator(conninfo: other, logger: TestPostgres.logger).run().applied.count == Migration.bundled.count)
    }
}
