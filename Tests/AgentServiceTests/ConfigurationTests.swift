import Foundation
import Testing

@testable import AgentService

@Suite("Configuration: environment, .env, and one clear line for a bad value")
struct ConfigurationTests {
    @Test("a .env file is parsed: export, quotes, comments; the real environment wins")
    func dotEnv() throws {
        let values = try AppEnvironment.parseDotEnv(
            """
            # comment
            PORT=9001
            export CLAUDE_MODEL="claude-test"
            SYSTEM_PROMPT='Be brief.'
            LOG_LEVEL=debug # trailing comment

            """, source: ".env")
        #expect(values["PORT"] == "9001")
        #expect(values["CLAUDE_MODEL"] == "claude-test")
        #expect(values["SYSTEM_PROMPT"] == "Be brief.")
        #expect(values["LOG_LEVEL"] == "debug")
        #expect(throws: ConfigurationError.self) { try AppEnvironment.parseDotEnv("NOT A LINE", source: ".env") }
        let configuration = try ServiceConfiguration(environment: AppEnvironment(values: values))
        #expect(configuration.port == 9001)
        #expect(configuration.model == "claude-test")
        #expect(configuration.systemPrompt == "Be brief.")
    }

    @Test("defaults let a newcomer run with nothing set: embedded database and the offline stub")
    func defaults() throws {
        let configuration = try ServiceConfiguration(environment: AppEnvironment(values: [:]))
        #expect(configuration.databaseURL == nil)
        #expect(configuration.usesOfflineStub)
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 8000)
        #expect(configuration.shutdownGraceSeconds == 25)
    }

    @Test(
        "each bad value is refused with a message naming the variable",
        arguments: [
            ("PORT", "eighty"), ("PORT", "70000"), ("LOG_LEVEL", "loud"), ("CLAUDE_MAX_TOKENS", "0"),
            ("CORS_ALLOWED_ORIGINS", "not a url"), ("ANTHROPIC_BASE_URL", "ftp://x"), ("SHUTDOWN_GRACE_SECONDS", "-1"),
            ("AUTO_MIGRATE", "maybe"), ("SYSTEM_PROMPT_FILE", "/nonexistent/prompt.txt"), ("WEB_UI", "sometimes"),
            ("SUPABASE_ANON_KEY", "sb_publishable_without_a_project_url"),
        ])
    func badValues(key: String, value: String) {
        do {
            _ = try ServiceConfiguration(environment: AppEnvironment(values: [key: value]))
            Issue.record("\(key)=\(value) was accepted")
        } catch {
            #expect("\(error)".hasPrefix("\(key):"), "message: \(error)")
        }
    }

    @Test("the binary refuses a bad setting with one line on stderr and a non-zero exit, before starting anything")
    func binaryRefusesBadSetting() async throws {
        let run = try await CommandRun.run(["serve"], environment: ["PORT": "eighty"])
        #expect(run.status != 0)
        let lines = run.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(run.stderr)")
        #expect(run.stderr.contains("PORT"))
    }
}
