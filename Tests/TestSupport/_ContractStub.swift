public import ThreadStore
public enum TestPostgres { public static func freshDatabase() async throws -> (conninfo: String, database: Database) { fatalError() } }
