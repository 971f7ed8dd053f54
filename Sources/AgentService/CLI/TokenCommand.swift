import ArgumentParser
import Foundation
import SupabaseAuth

/// `agent-service token`: a development helper that signs an access token the service accepts.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print an HS256 access token for a user, signed with SUPABASE_JWT_SECRET (development helper).",
        discussion: """
            The token is shaped like a Supabase Auth access token (sub, role authenticated, aud AUTH_AUDIENCE, iss \
            from SUPABASE_URL or AUTH_ISSUER, exp), so curl examples work with auth on: \
            curl -H "Authorization: Bearer $(agent-service token --user <uuid>)" ...
            """
    )

    @OptionGroup var userOptions: UserOptions

    @Option(name: .customLong("expires-in"), help: "Lifetime in seconds (1 to 2592000).")
    var expiresIn: Int = 3600

    mutating func validate() throws {
        guard (1...2_592_000).contains(expiresIn) else {
            throw ValidationError("--expires-in: '\(expiresIn)' is not a number of seconds from 1 to 2592000")
        }
    }

    func run() async throws {
        let configuration: ServiceConfiguration
        do {
            configuration = try ServiceConfiguration(environment: try AppEnvironment.current())
        } catch {
            CLI.fail("\(error)")
        }
        guard let secret = configuration.supabaseJWTSecret else {
            CLI.fail(
                "SUPABASE_JWT_SECRET is not set: tokens are signed with the project's legacy JWT secret (Supabase dashboard → Settings → API → JWT secret)"
            )
        }
        let token = try await TokenIssuer.hs256(
            secret: Array(secret.utf8), userID: userOptions.user, issuer: configuration.expectedIssuer,
            audience: configuration.authAudience, expiresIn: .seconds(expiresIn))
        print(token)
    }
}
