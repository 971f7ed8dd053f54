import Foundation
import Logging
import ThreadStore

/// Turn endings that could not be written to the database, kept on local disk until they are.
///
/// When the final write of a turn gives up (the database stayed down for `PERSIST_RETRY_SECONDS`, or shutdown came
/// with the database stalled) the ending is saved as one JSON file per turn (`<turn id>.json`, mode 0600, written
/// to a temporary name and renamed, so a crash never leaves half a file). The service writes them back at start-up
/// and on every sweep while it runs; the writes are idempotent by turn id, so a file that was in fact written
/// before (a slow write that finished after the deadline) changes nothing.
final class ReplySpool: Sendable {
    /// One turn ending.
    struct Entry: Codable, Sendable {
        enum Kind: String, Codable, Sendable { case completed, failed, interrupted, cancelled }
        var kind: Kind
        var turnID: UUID
        var userID: UUID
        var reply: String
        var model: String?
        var stopReason: String?
        var error: String?
        var usage: TokenUsage
        var firstTokenMs: Int?
        var latencyMs: Int?
        /// The full content of a reply that used tools or thinking (`Turn.content`); absent in older spool files.
        var content: String?
    }

    let directory: URL
    private let logger: Logger

    init(directory: URL, logger: Logger) {
        self.directory = directory
        self.logger = logger
    }

    /// Saves `entry`; false (logged) when even the disk fails.
    @discardableResult
    func save(_ entry: Entry) -> Bool {
        do {
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let data = try JSONEncoder().encode(entry)
            let final = directory.appendingPathComponent("\(entry.turnID.uuidString.lowercased()).json")
            let temporary = directory.appendingPathComponent(".\(entry.turnID.uuidString.lowercased()).tmp")
            guard FileManager.default.createFile(atPath: temporary.path, contents: data, attributes: [.posixPermissions: 0o600])
            else { throw CocoaError(.fileWriteUnknown) }
            if rename(temporary.path, final.path) != 0 { throw CocoaError(.fileWriteUnknown) }
            return true
        } catch {
            logger.critical(
                "could not spool a reply to disk; it is lost", metadata: ["turn_id": "\(entry.turnID)", "error": "\(error)"])
            return false
        }
    }

    /// The spooled entries, oldest first.
    func pending() -> [(url: URL, entry: Entry)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        var entries: [(URL, Entry, Date)] = []
        for name in names where name.hasSuffix(".json") && !name.hasPrefix(".") {
            let url = directory.appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: url.path),
                let entry = try? JSONDecoder().decode(Entry.self, from: data)
            else {
                logger.error("unreadable spool file left in place", metadata: ["file": "\(url.path)"])
                continue
            }
            let date = (try? FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? nil
            entries.append((url, entry, date ?? .distantPast))
        }
        return entries.sorted { $0.2 < $1.2 }.map { ($0.0, $0.1) }
    }

    /// Writes every spooled entry to the database and removes each that was written; returns how many there were
    /// and how many were written.
    @discardableResult
    func flush(into repository: ThreadRepository) async -> (pending: Int, written: Int) {
        let entries = pending()
        var written = 0
        for (url, entry) in entries {
            do {
                try await Self.write(entry, to: repository)
                try? FileManager.default.removeItem(at: url)
                written += 1
                logger.notice(
                    "wrote a spooled \(entry.kind.rawValue) reply to the database", metadata: ["turn_id": "\(entry.turnID)"])
            } catch let error as StoreError where error.code == .notFound {
                try? FileManager.default.removeItem(at: url)
                logger.notice(
                    "a spooled reply's turn no longer exists (its thread was deleted); dropped",
                    metadata: ["turn_id": "\(entry.turnID)"])
            } catch {
                logger.warning(
                    "could not write spooled replies yet; they stay on disk", metadata: ["error": "\(error)"])
                break
            }
        }
        return (entries.count, written)
    }

    /// The database write for `entry` (idempotent by turn id).
    static func write(_ entry: Entry, to repository: ThreadRepository) async throws {
        switch entry.kind {
        case .completed:
            try await repository.completeTurn(
                TurnCompletion(
                    turnID: entry.turnID, userID: entry.userID, reply: entry.reply, model: entry.model,
                    stopReason: entry.stopReason, usage: entry.usage, firstTokenMs: entry.firstTokenMs,
                    latencyMs: entry.latencyMs, content: entry.content))
        case .cancelled:
            try await repository.cancelTurn(
                TurnCompletion(
                    turnID: entry.turnID, userID: entry.userID, reply: entry.reply, model: entry.model,
                    stopReason: "cancelled", usage: entry.usage, firstTokenMs: entry.firstTokenMs,
                    latencyMs: entry.latencyMs, content: entry.content))
        case .failed, .interrupted:
            try await repository.failTurn(
                TurnFailure(
                    turnID: entry.turnID, userID: entry.userID, status: entry.kind == .failed ? .failed : .interrupted,
                    partialReply: entry.reply, error: entry.error ?? "unknown error", model: entry.model,
                    usage: entry.usage, firstTokenMs: entry.firstTokenMs, latencyMs: entry.latencyMs,
                    content: entry.content))
        }
    }
}
