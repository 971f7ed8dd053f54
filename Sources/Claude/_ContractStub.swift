public import Foundation
public import Logging
public struct ClaudeConfiguration: Sendable { public var apiKey: String; public var baseURL: String; public var maxRetries = 2; public var idleTimeout: Duration = .seconds(300); public var retryDelayScale = 1.0
  public init(apiKey: String, baseURL: String = "https://api.anthropic.com") { self.apiKey = apiKey; self.baseURL = baseURL } }
public struct CacheControl: Sendable { public static let ephemeral = CacheControl() }
public struct TextBlock: Sendable { public var text: String; public var cacheControl: CacheControl?; public init(text: String, cacheControl: CacheControl? = nil) { self.text = text } }
public struct MessageParam: Sendable { public enum Role: String, Sendable { case user, assistant }; public var role: Role; public var content: [TextBlock]; public init(role: Role, content: [TextBlock]) { self.role = role; self.content = content } }
public struct MessagesRequest: Sendable { public var model: String; public var maxTokens: Int; public var system: [TextBlock]; public var messages: [MessageParam]; public var metadataUserID: String?
  public init(model: String, maxTokens: Int, system: [TextBlock], messages: [MessageParam], metadataUserID: String? = nil) { self.model = model; self.maxTokens = maxTokens; self.system = system; self.messages = messages } }
public struct Usage: Sendable, Hashable { public var inputTokens = 0, outputTokens = 0, cacheCreationInputTokens = 0, cacheReadInputTokens = 0 }
public enum MessageStreamEvent: Sendable { case textDelta(index: Int, text: String); case messageStop; case ping }
public struct ClaudeError: Error, Sendable { public struct Kind: Hashable, Sendable { public static let api = Kind(), truncated = Kind(), stalled = Kind(), connection = Kind(), invalidRequest = Kind(), cancelled = Kind() }
  public var kind: Kind; public var status: Int?; public var type: String?; public var message: String; public var isRetryable: Bool
  public static func truncatedStream() -> ClaudeError { fatalError() } }
public struct MessageStream: AsyncSequence, Sendable { public typealias Element = MessageStreamEvent
  public struct AsyncIterator: AsyncIteratorProtocol { public mutating func next() async throws -> MessageStreamEvent? { nil } }
  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator() } }
public struct MessageAccumulator: Sendable { public init() {}; public mutating func consume(_ e: MessageStreamEvent) {}; public var text = ""; public var usage = Usage(); public var stopReason: String?; public var model: String?; public var sawMessageStop = false }
public final class ClaudeClient: Sendable { public init(configuration: ClaudeConfiguration, logger: Logger) {}
  public func stream(_ request: MessagesRequest) -> MessageStream { MessageStream() }; public func shutdown() {} }
