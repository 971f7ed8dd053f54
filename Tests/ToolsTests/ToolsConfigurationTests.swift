import Foundation
import Testing
import Tools

@Suite("TOOLS_CONFIG: the file an operator writes")
struct ToolsConfigurationTests {
    private func parse(_ json: String) throws -> ToolsConfiguration {
        try ToolsConfiguration(json: Data(json.utf8))
    }

    private func error(_ json: String) -> String {
        do {
            _ = try parse(json)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test("a stdio and an HTTP server, with defaults and overrides")
    func decodesBothKinds() throws {
        let configuration = try parse(
            """
            {"servers": {
              "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"], "env": {"A": "1"},
                       "allow": ["get_current_time"]},
              "docs": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer x"},
                       "timeout_seconds": 2.5, "max_output_bytes": 5000}
            }}
            """)
        #expect(configuration.servers.map(\.name) == ["docs", "time"])
        let docs = configuration.servers[0]
        #expect(
            docs.transport
                == .http(url: URL(string: "https://mcp.example.com/mcp")!, headers: ["Authorization": "Bearer x"]))
        #expect(docs.timeout == .milliseconds(2500))
        #expect(docs.maxOutputBytes == 5000)
        #expect(docs.allow == nil)
        let time = configuration.servers[1]
        #expect(
            time.transport
                == .stdio(command: "mcp-server-time", arguments: ["--local-timezone", "UTC"], environment: ["A": "1"]))
        #expect(time.timeout == .seconds(30))
        #expect(time.maxOutputBytes == 100_000)
        #expect(time.allow == ["get_current_time"])
    }

    @Test(
        "mistakes are refused with the server and the field named",
        arguments: [
            (#"{"servers": {}, "extra": 1}"#, "unknown key 'extra'"),
            (#"{}"#, "servers: missing"),
            (#"{"servers": {"a": {"command": "x", "comand": "y"}}}"#, "servers.a: unknown key 'comand'"),
            (#"{"servers": {"a": {"command": "x", "url": "https://h/mcp"}}}"#, "servers.a: has both"),
            (#"{"servers": {"a": {"args": []}}}"#, "servers.a: needs \"command\""),
            (#"{"servers": {"": {"command": "x"}}}"#, "the name '' is not allowed"),
            (#"{"servers": {"a.b": {"command": "x"}}}"#, "the name 'a.b' is not allowed"),
            (#"{"servers": {"abcdefghijabcdefghijabcdefghijabc": {"command": "x"}}}"#, "is not allowed"),
            (#"{"servers": {"a": {"command": 5}}}"#, "servers.a.command: expected a string"),
            (#"{"servers": {"a": {"command": "x", "args": "y"}}}"#, "servers.a.args: expected an array of strings"),
            (#"{"servers": {"a": {"url": "ftp://h/x"}}}"#, "servers.a.url: 'ftp://h/x' is not an http(s) URL"),
            (#"{"servers": {"a": {"command": "x", "timeout_seconds": 0}}}"#, "servers.a.timeout_seconds"),
            (#"{"servers": {"a": {"command": "x", "max_output_bytes": 0}}}"#, "servers.a.max_output_bytes"),
            (#"{"servers": {"a": {"command": "x", "headers": {}}}}"#, "servers.a.headers: only for a \"url\" server"),
            (#"{"servers": {"a": {"command": ""}}}"#, "servers.a.command: must not be empty"),
            (#"{"servers": [1]}"#, "servers"),
            ("{not json", "not valid JSON"),
        ])
    func refusesMistakes(json: String, expected: String) {
        let message = error(json)
        #expect(message.hasPrefix("TOOLS_CONFIG: "), "\(message)")
        #expect(message.contains(expected), "\(message)")
    }
}
