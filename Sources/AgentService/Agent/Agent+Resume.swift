import Foundation
import Logging
import ThreadStore

/// Where a client stands in a turn's reply: the SSE id of the last chunk it got (`<turn_id>:<offset>`), or an offset
/// alone for the thread's latest turn.
struct ResumePosition: Sendable, Equatable {
    var turnID: UUID?
    /// UTF-8 bytes of the reply the client has.
    var offset: Int

    /// Parses `<turn_id>:<offset>` or `<offset>`; nil when it is neither.
    init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let offset = Int(parts[parts.count - 1]), offset >= 0,
            parts[parts.count - 1].allSatisfy(\.isASCII)
        else { return nil }
        if parts.count == 2 {
            guard parts[0].count == 36, let id = UUID(uuidString: String(parts[0])) else { return nil }
            turnID = id
        }
        self.offset = offset
    }

    init(turnID: UUID?, offset: Int) {
        self.turnID = turnID
        self.offset = offset
    }
}

/// A reply being followed: which turn, and its events from the client's position.
struct FollowedTurn: Sendable {
    var threadID: String
    var turnID: UUID
    var events: AsyncStream<TurnEvent>
}

/// Why a resume or stop request could not be served.
enum FollowError: Error, Sendable {
    case threadNotFound
    /// The position names a turn that is not in this thread.
    case turnNotFound
    /// The position is past the end of the reply.
    case beyondReply(length: Int)
    case noActiveTurn
    case storeUnavailable
}

extension Agent {
    /// The reply of a thread's turn from `position` on, to the same final frame the original stream ends with.
    ///
    /// The turn named by the position (else the thread's running turn, from its start) is followed live when it runs
    /// here; from its owner through `TurnRelay` when it runs on another instance; from its row when it has finished
    /// (or when no relay exists). Nil when the thread has no running turn and there is nothing to resume.
    func follow(userID: UUID, threadID: String, from position: ResumePosition?) async throws(FollowError)
        -> FollowedTurn?
    {
        if let slot = localSlot(userID: userID, threadID: threadID, turnID: position?.turnID) {
            guard let start = slot.reply.resumePoint(position?.offset ?? 0) else {
                throw .beyondReply(length: slot.reply.count)
            }
            metrics.resumeStarted(source: "local")
            return FollowedTurn(threadID: threadID, turnID: slot.id, events: slot.reply.events(from: start))
        }
        let turn: Turn
        do {
            if let turnID = position?.turnID {
                guard let found = try await repository.turn(userID: userID, id: turnID), found.threadID == threadID
                else {
                    if try await repository.turns(userID: userID, threadID: threadID, limit: 0, beforeSeq: nil) == nil {
                        throw FollowError.threadNotFound
                    }
                    throw FollowError.turnNotFound
                }
                turn = found
            } else {
                guard let latest = try await repository.turns(userID: userID, threadID: threadID, limit: 1, beforeSeq: nil)
                else { throw FollowError.threadNotFound }
                guard let last = latest.last else { return nil }
                // Without a position only a running turn is sent; with an offset alone, the latest turn is resumed.
                if position == nil, last.status != .streaming { return nil }
                turn = last
            }
        } catch let error as FollowError {
            throw error
        } catch {
            throw .storeUnavailable
        }
        // It may have started here since the first look, or be running elsewhere.
        if turn.status == .streaming, let slot = supervisor.slot(turn.id), slot.userID == userID {
            guard let start = slot.reply.resumePoint(position?.offset ?? 0) else {
                throw .beyondReply(length: slot.reply.count)
            }
            metrics.resumeStarted(source: "local")
            return FollowedTurn(threadID: threadID, turnID: slot.id, events: slot.reply.events(from: start))
        }
        let offset = position?.offset ?? 0
        if turn.status == .streaming {
            metrics.resumeStarted(source: relay == nil ? "stored" : "remote")
            let events =
                relay?.follow(turn, from: offset)
                ?? StoredTurnFollower(repository: repository, pingInterval: pingInterval).events(of: turn, from: offset)
            return FollowedTurn(threadID: threadID, turnID: turn.id, events: events)
        }
        metrics.resumeStarted(source: "stored")
        let stored = ReplyBroadcast(finishedWith: turn.reply ?? "", final: Self.finalEvent(of: turn))
        // A turn whose instance died is stored with its last checkpoint, which its client may have read past: that
        // client gets the ending alone, as a relay follower of the same turn does.
        let position = turn.status == .interrupted ? min(offset, stored.count) : offset
        guard let start = stored.resumePoint(position) else { throw .beyondReply(length: stored.count) }
        return FollowedTurn(threadID: threadID, turnID: turn.id, events: stored.events(from: start))
    }

    /// Stops the thread's running turn: the upstream request is cancelled and the partial reply stored as
    /// `cancelled`. Returns the turn's id once its ending is stored (or after `wait` at most).
    func stop(userID: UUID, threadID: String, wait: Duration = .seconds(3)) async throws(FollowError) -> UUID {
        if let slot = localSlot(userID: userID, threadID: threadID, turnID: nil) {
            slot.post(.cancelRequested)
            _ = await withDeadline(wait) { await slot.reply.waitUntilFinished() }
            return slot.id
        }
        let running: Turn
        do {
            guard let latest = try await repository.turns(userID: userID, threadID: threadID, limit: 1, beforeSeq: nil)
            else { throw FollowError.threadNotFound }
            guard let last = latest.last, last.status == .streaming else { throw FollowError.noActiveTurn }
            running = last
        } catch let error as FollowError {
            throw error
        } catch {
            throw .storeUnavailable
        }
        if let slot = supervisor.slot(running.id), slot.userID == userID {
            slot.post(.cancelRequested)
            _ = await withDeadline(wait) { await slot.reply.waitUntilFinished() }
            return slot.id
        }
        if let relay, await relay.cancel(running, wait: wait) { return running.id }
        // No instance answered: its owner stopped or cannot be reached. The row is ended here; an owner that still
        // runs loses its lease at the next renewal and stops.
        logger.notice(
            "no instance answered a stop request; marking the turn cancelled in the database",
            metadata: ["turn_id": "\(running.id)"])
        do {
            guard let turn = try await repository.cancelStreamingTurn(userID: userID, turnID: running.id) else {
                throw FollowError.noActiveTurn
            }
            guard turn.status == .cancelled else { throw FollowError.noActiveTurn }
        } catch let error as FollowError {
            throw error
        } catch {
            throw .storeUnavailable
        }
        return running.id
    }

    /// The running turn of this user's thread in this process (the given turn, when named).
    private func localSlot(userID: UUID, threadID: String, turnID: UUID?) -> TurnSlot? {
        if let turnID {
            guard let slot = supervisor.slot(turnID), slot.userID == userID, slot.threadID == threadID else { return nil }
            return slot
        }
        return supervisor.slot(userID: userID, threadID: threadID)
    }
}
