import Foundation
import TestSupport
import Testing

@testable import ThreadStore

@Suite("Row-level security: the database keeps users apart", .timeLimit(.minutes(2)))
struct RowSecurityTests {
    let alice = UUID()
    let bob = UUID()

    private func seed(_ repository: ThreadRepository) async throws {
        for user in [alice, bob] {
            for thread in ["one", "two"] {
                let turn = try started(
                    try await repository.beginTurn(BeginTurnRequest(userID: user, threadID: thread, question: "q")))
                try await repository.completeTurn(TurnCompletion(turnID: turn.turnID, userID: user, reply: "r"))
            }
        }
    }

    @Test("an unscoped SELECT * FROM turns inside a user's transaction returns only that user's rows")
    func unscopedSelectSeesOnlyTheCaller() async throws {
        try await withRepository(poolSize: 1) { repository, database, _ in
            try await seed(repository)
            let alice = self.alice
            let bob = self.bob
            // As the table owner every row is there, so the scoped answers below are a real filter.
            let all = try await database.withConnection { try $0.query("SELECT user_id FROM turns") }
            #expect(all.rows.count == 4)

            let asAlice = try await database.withConnection { try $0.asUser(alice, "SELECT * FROM turns") }
            #expect(asAlice.rows.count == 2)
            let userColumn = try #require(asAlice.columns.firstIndex(of: "user_id"))
            #expect(asAlice.rows.allSatisfy { $0[userColumn] == alice.uuidString.lowercased() })
            let threadsAsBob = try await database.withConnection { try $0.asUser(bob, "SELECT user_id FROM threads") }
            #expect(threadsAsBob.rows.map { $0[0] } == [bob.uuidString.lowercased(), bob.uuidString.lowercased()])

            // Writes without a user filter touch only the caller's rows, and another user's rows cannot be planted.
            let updated = try await database.withConnection {
                try $0.asUser(alice, "UPDATE turns SET reply = 'rewritten'")
            }
            #expect(updated.affectedRows == 2)
            let bobsReplies = try await database.withConnection {
                try $0.query("SELECT reply FROM turns WHERE user_id = \(bob)::uuid")
            }
            #expect(bobsReplies.rows.allSatisfy { $0[0] == "r" })
            await #expect(throws: StoreError.self) {
                try await database.withConnection {
                    try $0.asUser(alice, "INSERT INTO threads (user_id, id) VALUES (\(bob)::uuid, 'planted')")
                }
            }
            let planted = try await database.withConnection {
                try $0.query("SELECT count(*) FROM threads WHERE id = 'planted'")
            }
            #expect(planted.int(0, 0) == 0)

            // Nothing outlives the transaction: the same (only) connection is the owner again, with no user set.
            let after = try await database.withConnection {
                try $0.query("SELECT current_user, coalesce(current_setting('request.jwt.claims', true), '')")
            }
            #expect(after.string(0, 0) != UserScope.role)
            #expect(after.string(0, 1) == "")
        }
    }

    @Test("a failing statement in a scoped batch rolls the batch back and leaves the connection usable")
    func failedBatchRollsBack() async throws {
        try await withRepository(poolSize: 1) { repository, database, _ in
            let alice = self.alice
            await #expect(throws: StoreError.self) {
                try await database.withConnection {
                    try $0.asUser(
                        alice,
                        [
                            "INSERT INTO threads (user_id, id) VALUES (\(alice)::uuid, 'rolled-back')",
                            "SELECT 1 / 0",
                        ])
                }
            }
            let state = try await database.withConnection {
                try $0.query("SELECT count(*) FROM threads WHERE id = 'rolled-back'")
            }
            #expect(state.int(0, 0) == 0)
            // The next turn on the same connection works.
            let turn = try started(
                try await repository.beginTurn(BeginTurnRequest(userID: alice, threadID: "next", question: "q")))
            #expect(turn.seq == 1)
        }
    }

    @Test("a turn takes two round trips with row-level security on")
    func roundTripsPerTurn() async throws {
        try await withRepository { repository, database, _ in
            let before = database.statistics.roundTrips
            let turn = try started(
                try await repository.beginTurn(BeginTurnRequest(userID: alice, threadID: "t", question: "q")))
            try await repository.completeTurn(TurnCompletion(turnID: turn.turnID, userID: alice, reply: "r"))
            #expect(database.statistics.roundTrips - before == 2)
        }
    }

    @Test("the migration creates the service role without login and enables RLS on both tables")
    func migrationState() async throws {
        try await withRepository { _, database, _ in
            let role = try await database.withConnection {
                try $0.query("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'agent_service_user'")
            }
            #expect(role.bool(0, 0) == false)
            let tables = try await database.withConnection {
                try $0.query(
                    "SELECT relname, relrowsecurity FROM pg_class WHERE relname IN ('threads', 'turns') ORDER BY relname")
            }
            #expect(tables.rows.map { $0[1] } == ["t", "t"])
        }
    }
}

@Suite("Row-level security on a Supabase-shaped database", .timeLimit(.minutes(2)))
struct SupabaseDataAPITests {
    /// Supabase's Data API roles and `auth.uid()`, as the `supabase/postgres` image has them, on a fresh database.
    private func supabaseShapedDatabase() async throws -> (conninfo: String, database: Database) {
        let conninfo = try await TestPostgres.emptyDatabase()
        let setup = Database(configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger)
        try await setup.withConnection { connection in
            try connection.executeScript(
                """
                DO $$ BEGIN
                    BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
                    BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
                END $$;
                CREATE SCHEMA auth;
                CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
                    SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
                GRANT USAGE ON SCHEMA public, auth TO anon, authenticated;
                -- Supabase grants every new public table to these roles by default.
                ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;
                """)
        }
        await setup.close()
        _ = try await Migrator(conninfo: conninfo, logger: TestPostgres.logger).run()
        return (conninfo, Database(configuration: DatabaseConfiguration(conninfo: conninfo, poolSize: 1), logger: TestPostgres.logger))
    }

    /// Runs `sql` as a Data API role with `user`'s claims, as PostgREST does; returns the error's SQLSTATE or nil.
    private func asDataAPI(
        _ database: Database, role: String, user: UUID, _ sql: String
    ) async throws -> (sqlState: String?, result: QueryResult?) {
        let claims = #"{"sub":"\#(user.uuidString.lowercased())","role":"\#(role)"}"#
        do {
            let results = try await database.withConnection { connection in
                try connection.pipeline([
                    "BEGIN", "SELECT set_config('role', \(role), true), set_config('request.jwt.claims', \(claims), true)",
                    SQLQuery(unsafeSQL: sql), "COMMIT",
                ])
            }
            return (nil, results[2])
        } catch let error as StoreError {
            return (error.sqlState, nil)
        }
    }

    @Test("signed-in users may read and delete their own rows through the Data API, never insert or update; anon gets nothing")
    func dataAPIPermissions() async throws {
        let (_, database) = try await supabaseShapedDatabase()
        do {
            try await checkDataAPIPermissions(database)
        } catch {
            await database.close()
            throw error
        }
        await database.close()
    }

    private func checkDataAPIPermissions(_ database: Database) async throws {
        let repository = ThreadRepository(database: database)
        let alice = UUID()
        let bob = UUID()
        for user in [alice, bob] {
            let turn = try started(try await repository.beginTurn(BeginTurnRequest(userID: user, threadID: "t", question: "q")))
            try await repository.completeTurn(TurnCompletion(turnID: turn.turnID, userID: user, reply: "r"))
        }
        let streaming = try started(
            try await repository.beginTurn(BeginTurnRequest(userID: alice, threadID: "live", question: "q")))

        let read = try await asDataAPI(database, role: "authenticated", user: alice, "SELECT user_id FROM turns")
        #expect(read.result?.rows.count == 2)
        #expect(read.result?.rows.allSatisfy { $0[0] == alice.uuidString.lowercased() } == true)

        let insert = try await asDataAPI(
            database, role: "authenticated", user: alice,
            "INSERT INTO turns (id, user_id, thread_id, seq, question, reply, status) VALUES "
                + "(gen_random_uuid(), '\(alice.uuidString)', 't', 9, 'forged', 'forged reply', 'completed')")
        #expect(insert.sqlState == "42501")
        let update = try await asDataAPI(
            database, role: "authenticated", user: alice, "UPDATE turns SET reply = 'forged'")
        #expect(update.sqlState == "42501")
        let plant = try await asDataAPI(
            database, role: "authenticated", user: alice, "INSERT INTO threads (user_id, id) VALUES ('\(alice.uuidString)', 'x')")
        #expect(plant.sqlState == "42501")

        // Deleting: own finished turns yes, a streaming one no, someone else's never.
        let deleteStreaming = try await asDataAPI(
            database, role: "authenticated", user: alice, "DELETE FROM turns WHERE id = '\(streaming.turnID.uuidString)'")
        #expect(deleteStreaming.result?.affectedRows == 0)
        let deleteOthers = try await asDataAPI(
            database, role: "authenticated", user: alice, "DELETE FROM turns WHERE user_id = '\(bob.uuidString)'")
        #expect(deleteOthers.result?.affectedRows == 0)
        let deleteOwn = try await asDataAPI(
            database, role: "authenticated", user: alice, "DELETE FROM threads WHERE id = 't'")
        #expect(deleteOwn.result?.affectedRows == 1)

        let anon = try await asDataAPI(database, role: "anon", user: alice, "SELECT count(*) FROM turns")
        #expect(anon.sqlState == "42501")

        // The service's turn functions are not callable by the Data API's roles (not through RPC, not at all).
        for role in ["anon", "authenticated"] {
            let call = try await asDataAPI(
                database, role: role, user: alice,
                "SELECT * FROM agent_service.begin_turn('\(alice.uuidString)', 'rpc', gen_random_uuid(), 'q', 't', NULL, 60, 5, NULL)")
            #expect(call.sqlState == "42501", "\(role)")
        }

        // The service's own path still works on this database.
        let next = try started(try await repository.beginTurn(BeginTurnRequest(userID: bob, threadID: "t", question: "again")))
        #expect(next.seq == 2)
    }

    @Test("question and reply have length limits in the database")
    func lengthLimits() async throws {
        try await withRepository { repository, database, _ in
            let user = UUID()
            let turn = try started(try await repository.beginTurn(BeginTurnRequest(userID: user, threadID: "t", question: "q")))
            await #expect(throws: StoreError.self) {
                try await repository.completeTurn(
                    TurnCompletion(turnID: turn.turnID, userID: user, reply: String(repeating: "x", count: 2_000_001)))
            }
            await #expect(throws: StoreError.self) {
                _ = try await repository.beginTurn(
                    BeginTurnRequest(userID: user, threadID: "u", question: String(repeating: "y", count: 1_000_001)))
            }
        }
    }
}
