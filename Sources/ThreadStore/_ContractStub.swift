public import Foundation
public import Logging
public struct TokenUsage: Sendable, Hashable, Codable { public var inputTokens = 0, outputTokens = 0, cacheCreationInputTokens = 0, cacheReadInputTokens = 0
  public init(inputTokens: Int = 0, outputTokens: Int = 0, cacheCreationInputTokens: Int = 0, cacheReadInputTokens: Int = 0) {} }
public enum TurnStatus: String, Sendable, Codable { case streaming, completed, failed, interrupted }
public struct Turn: Sendable, Hashable, Codable {
  public var id: UUID; public var userID: UUID; public var threadID: String; public var seq: Int
  public var question: String; public var reply: String?; public var status: TurnStatus; public var error: String?
  public var model: String?; public var stopReason: String?; public var usage: TokenUsage
  public var startedAt: Date; public var firstTokenMs: Int?; public var latencyMs: Int?; public var finishedAt: Date?
  public var idempotencyKey: String?
}
public struct ThreadSummary: Sendable, Hashable, Codable { public var id: String; public var title: String?; public var createdAt: Date; public var updatedAt: Date; public var turnCount: Int }
public struct BeginTurnRequest: Sendable { public var userID: UUID; public var threadID: String; public var question: String; public var idempotencyKey: String?; public var historyLimit: Int; public var lease: Duration
  public init(userID: UUID, threadID: String, question: String, idempotencyKey: String? = nil, historyLimit: Int = 50, lease: Duration = .seconds(120)) { fatalError() } }
public struct StartedTurn: Sendable { public var turnID: UUID; public var seq: Int; public var threadCreated: Bool; public var history: [Turn]; public var recoveredTurnIDs: [UUID] }
public enum BeginTurnResult: Sendable { case started(StartedTurn); case duplicate(Turn) }
public struct TurnCompletion: Sendable { public init(turnID: UUID, userID: UUID, reply: String, model: String?, stopReason: String?, usage: TokenUsage, firstTokenMs: Int?, latencyMs: Int?) { self.model = model; self.stopReason = stopReason }
  public var model: String?; public var stopReason: String? }
public struct TurnFailure: Sendable { public init(turnID: UUID, userID: UUID, status: TurnStatus, partialReply: String, error: String, model: String?, usage: TokenUsage, firstTokenMs: Int?, latencyMs: Int?) {} }
public struct DatabaseConfiguration: Sendable {}
public final class Database: Sendable { public init(configuration: DatabaseConfiguration, logger: Logger) {}; public func close() async {} }
public struct StoreError: Error, Sendable { public struct Code: Hashable, Sendable { public static let threadBusy = Code(); public static let invalidText = Code() }
  public var code: Code; public var message: String; public var isTransient: Bool; public static func wrapping(_ e: any Error) -> StoreError { fatalError() } }
public struct ThreadRepository: Sendable {
  public init(database: Database) {}
  public func beginTurn(_ request: BeginTurnRequest) async throws -> BeginTurnResult { fatalError() }
  @discardableResult public func completeTurn(_ completion: TurnCompletion) async throws -> Bool { fatalError() }
  @discardableResult public func failTurn(_ failure: TurnFailure) async throws -> Bool { fatalError() }
  public func renewLease(turnID: UUID, userID: UUID, lease: Duration) async throws {}
  public func listThreads(userID: UUID, limit: Int, before: Date?) async throws -> [ThreadSummary] { [] }
  public func turns(userID: UUID, threadID: String, limit: Int, beforeSeq: Int?) async throws -> [Turn]? { nil }
  public func turn(userID: UUID, id: UUID) async throws -> Turn? { nil }
  public func turn(userID: UUID, idempotencyKey: String) async throws -> Turn? { nil }
  @discardableResult public func deleteThread(userID: UUID, threadID: String) async throws -> Bool { false }
  public func interruptStreamingTurns(ids: [UUID], error: String) async throws {}
  public func ping() async throws {}
}
