public import Logging
public struct StubConfiguration: Sendable { public var deltaInterval: Duration = .zero; public init() {} }
public final class ClaudeStub: Sendable { public init(configuration: StubConfiguration = .init(), logger: Logger) {}
  public func start(host: String = "127.0.0.1", port: Int = 0) async throws {}; public var baseURL: String { "" }; public func stop() async {} }
public struct StubRequest: Sendable { public var messages: [(role: String, text: String)] { [] } }
extension ClaudeStub { public var receivedRequests: [StubRequest] { [] } }
extension StubRequest { public var model: String { "" } }
