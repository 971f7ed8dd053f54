import Logging
import ThreadStore
func openDatabase(environment: AppEnvironment, logger: Logger, poolSize: Int, migrate: Bool) async throws -> (Database, description: String) { fatalError() }
