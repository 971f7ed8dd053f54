import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import ThreadStore

/// Reaches turns that run on other instances, through Postgres alone (`LISTEN`/`NOTIFY`).
///
/// The owner of a turn keeps its reply in memory (`ReplyBroadcast`). A resumer elsewhere asks for it on the shared
/// request channel; the owner answers on the resumer's instance channel with the missed text, then the live text as
/// it grows, then the final frame, each message under Postgres' 8,000-byte payload limit and sent one after another
/// (text that arrives while a `NOTIFY` is in flight goes in the next one). Nothing is sent for a turn nobody resumes.
/// Every message carries its offset, so a follower notices a lost message (a listener reconnect) and asks again from
/// where it is. A Stop for a turn owned elsewhere travels the same way and is acknowledged once the ending is stored.
///
/// A follower also reads the turn's row now and then: if the owner died, the row (recovered as `interrupted` once
/// its lease expired) ends the stream with the checkpointed text; if the owner finished before it was asked, the
/// stored reply does.
final class TurnRelay: Service, Sendable {
    static let requestChannel = "agent_service_turns"
    static let instancePrefix = "agent_service_i_"

    /// The least time between two text messages to one follower (a fast stream is batched, not one NOTIFY a delta).
    static let batchInterval = Duration.milliseconds(50)

    /// At most this many remote followers per turn (a hostile flood of requests cannot make an owner send without end).
    static let maximumFollowersPerTurn = 64

    /// This instance's channel, where answers for its followers arrive.
    let instanceChannel: String
    private let database: Database
    private let listener: NotificationListener
    private let supervisor: TurnSupervisor
    private let repository: ThreadRepository
    private let metrics: ServiceMetrics
    private let logger: Logger
    private let pingInterval: Duration

    private enum FollowerInput: Sendable {
        case message(RelayMessage)
        case relisten
        case tick
        case stop
    }

    private enum Job: Sendable {
        case follow(Follower)
        case publish(TurnSlot, RelayMessage, StopSignal)
        case acknowledgeCancel(TurnSlot, RelayMessage)
    }

    private struct Follower: Sendable {
        var sub: UUID
        var turn: Turn
        var offset: Int
        var output: AsyncStream<TurnEvent>.Continuation
        var inbox: AsyncStream<FollowerInput>
        var post: AsyncStream<FollowerInput>.Continuation
    }

    private struct State {
        var running = false
        var listening = false
        var followers: [UUID: AsyncStream<FollowerInput>.Continuation] = [:]
        var publishers: [UUID: (turn: UUID, stop: StopSignal)] = [:]
    }

    private let state = Mutex(State())
    private let jobs: AsyncStream<Job>
    private let jobQueue: AsyncStream<Job>.Continuation

    /// - Parameter listenConfiguration: the session for `LISTEN` (a direct or session-mode connection: a
    ///   transaction-mode pooler never delivers notifications).
    init(
        database: Database, listenConfiguration: DatabaseConfiguration, supervisor: TurnSupervisor,
        repository: ThreadRepository, metrics: ServiceMetrics, pingInterval: Duration, logger: Logger
    ) throws {
        let instance = UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        instanceChannel = Self.instancePrefix + instance
        self.database = database
        self.supervisor = supervisor
        self.repository = repository
        self.metrics = metrics
        self.pingInterval = pingInterval
        self.logger = logger
        listener = try NotificationListener(
            configuration: listenConfiguration, channels: [Self.requestChannel, instanceChannel], logger: logger)
        (jobs, jobQueue) = AsyncStream<Job>.makeStream(bufferingPolicy: .unbounded)
    }

    // MARK: Running

    func run() async throws {
        state.withLock { $0.running = true }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.listener.run() }
                group.addTask { await self.dispatch() }
                for await job in jobs {
                    switch job {
                    case .follow(let follower): group.addTask { await self.runFollower(follower) }
                    case .publish(let slot, let request, let stop):
                        group.addTask { await self.publish(slot, for: request, until: stop) }
                    case .acknowledgeCancel(let slot, let request):
                        group.addTask { await self.acknowledgeCancel(slot, for: request) }
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.state.withLock { $0.running = false }
            self.listener.stop()
            self.jobQueue.finish()
        }
        let followers = state.withLock { state in
            state.running = false
            return Array(state.followers.values)
        }
        for follower in followers { follower.yield(.stop) }
    }

    /// Routes what the listener hears: requests for turns running here, answers for followers here.
    private func dispatch() async {
        for await event in listener.events {
            switch event {
            case .listening:
                let followers = state.withLock { state in
                    state.listening = true
                    return Array(state.followers.values)
                }
                // Anything sent while nobody listened (before the first connect, during a reconnect) was lost: every
                // follower asks again from where it is.
                for follower in followers { follower.yield(.relisten) }
            case .notification(let channel, let payload, _):
                guard let message = RelayMessage.parse(payload) else { continue }
                if channel == instanceChannel {
                    _ = state.withLock { $0.followers[message.sub] }?.yield(.message(message))
                } else if channel == Self.requestChannel {
                    handleRequest(message)
                }
            }
        }
    }

    private func handleRequest(_ request: RelayMessage) {
        guard let op = request.op, let turnID = request.turn else { return }
        switch op {
        case .unfollow:
            state.withLock { $0.publishers.removeValue(forKey: request.sub) }?.stop.fire()
        case .follow:
            guard let slot = supervisor.slot(turnID), let to = request.to, to.hasPrefix(Self.instancePrefix),
                to.utf8.count <= 63
            else { return }
            let stop = StopSignal()
            let (accepted, replaced) = state.withLock { state -> (Bool, StopSignal?) in
                let replaced = state.publishers.removeValue(forKey: request.sub)?.stop
                let others = state.publishers.values.filter { $0.turn == turnID }.count
                guard others < Self.maximumFollowersPerTurn else { return (false, replaced) }
                state.publishers[request.sub] = (turnID, stop)
                return (true, replaced)
            }
            replaced?.fire()
            if accepted { jobQueue.yield(.publish(slot, request, stop)) }
        case .cancel:
            guard let slot = supervisor.slot(turnID), request.to?.hasPrefix(Self.instancePrefix) == true else {
                return
            }
            jobQueue.yield(.acknowledgeCancel(slot, request))
        }
    }

    private func send(_ message: RelayMessage, to channel: String, kind: String) async {
        do {
            try await database.notify(channel: channel, payload: message.payload())
            metrics.relayNotified(kind: kind)
        } catch {
            logger.warning(
                "could not notify another instance; it falls back to the stored turn",
                metadata: ["kind": "\(kind)", "error": "\(error)"])
        }
    }

    // MARK: The owner's side

    /// Sends a follower the reply from its offset on, as it grows, and then the final frame.
    private func publish(_ slot: TurnSlot, for request: RelayMessage, until stop: StopSignal) async {
        defer {
            state.withLock { state in
                if state.publishers[request.sub]?.stop === stop { state.publishers[request.sub] = nil }
            }
        }
        guard let to = request.to else { return }
        let start = slot.reply.resumePoint(request.from ?? 0) ?? slot.reply.count
        await run(until: stop) {
            var offset = start
            while true {
                switch await slot.reply.next(after: offset) {
                case .text(let text, let end)?:
                    for piece in RelayMessage.pieces(of: text, at: offset, sub: request.sub) {
                        await self.send(piece, to: to, kind: "text")
                    }
                    offset = end
                    // Live text goes out at most every `batchInterval`: what arrives meanwhile is one NOTIFY.
                    do { try await Task.sleep(for: Self.batchInterval) } catch { return }
                case .ping?, .activity?:
                    // Followers on other instances get the text (tool activity is shown where the turn runs).
                    continue
                case .final(let event)?:
                    if let final = RelayMessage.final(event) {
                        await self.send(RelayMessage(sub: request.sub, at: offset, end: final), to: to, kind: "end")
                    }
                    return
                case nil:
                    return
                }
            }
        }
    }

    private func acknowledgeCancel(_ slot: TurnSlot, for request: RelayMessage) async {
        slot.post(.cancelRequested)
        _ = await withDeadline(.seconds(3)) { await slot.reply.waitUntilFinished() }
        guard let to = request.to else { return }
        await send(RelayMessage(sub: request.sub, turn: slot.id, ack: true), to: to, kind: "ack")
    }

    // MARK: The resumer's side

    /// The events of `turn` (running on another instance) from `offset` on; nil when the relay is not running.
    func follow(_ turn: Turn, from offset: Int) -> AsyncStream<TurnEvent>? {
        let (events, output) = AsyncStream<TurnEvent>.makeStream(bufferingPolicy: .unbounded)
        let (inbox, post) = AsyncStream<FollowerInput>.makeStream(bufferingPolicy: .unbounded)
        let sub = UUID()
        let accepted = state.withLock { state -> Bool in
            guard state.running else { return false }
            state.followers[sub] = post
            return true
        }
        guard accepted else { return nil }
        output.onTermination = { _ in post.yield(.stop) }
        jobQueue.yield(
            .follow(Follower(sub: sub, turn: turn, offset: offset, output: output, inbox: inbox, post: post)))
        return events
    }

    private func runFollower(_ follower: Follower) async {
        let turn = follower.turn
        var offset = follower.offset
        let output = follower.output
        defer {
            _ = state.withLock { $0.followers.removeValue(forKey: follower.sub) }
            output.finish()
        }
        let request = RelayMessage(
            sub: follower.sub, op: .follow, turn: turn.id, to: instanceChannel, from: offset)
        await send(request, to: Self.requestChannel, kind: "request")
        let clock = ContinuousClock()
        var lastOutput = clock.now
        var lastPoll = clock.now
        var heardOwner = false
        var finishedRow: (turn: Turn, seen: ContinuousClock.Instant)?
        /// Set after asking again for a gap, so that the rest of the old answer in flight does not ask again each time.
        var resending = false

        /// Sends what the row holds past `offset`, then its ending.
        func finish(from row: Turn) {
            let text = Array((row.reply ?? "").utf8)
            if text.count > offset {
                let start = ReplyBroadcast.characterStart(atOrBefore: offset, in: text)
                output.yield(.chunk(String(decoding: text[start...], as: UTF8.self), end: text.count))
            }
            output.yield(Agent.finalEvent(of: row))
        }

        await withDiscardingTaskGroup { group in
            let post = follower.post
            group.addTask {
                while true {
                    do { try await Task.sleep(for: .milliseconds(250)) } catch { return }
                    post.yield(.tick)
                }
            }
            loop: for await input in follower.inbox {
                switch input {
                case .stop:
                    await send(
                        RelayMessage(sub: follower.sub, op: .unfollow, turn: turn.id), to: Self.requestChannel,
                        kind: "request")
                    break loop
                case .relisten:
                    resending = true
                    var again = request
                    again.from = offset
                    await send(again, to: Self.requestChannel, kind: "request")
                case .message(let message):
                    heardOwner = true
                    if let at = message.at, let text = message.text {
                        let bytes = Array(text.utf8)
                        if at > offset {
                            // A message was lost: ask again from where we are (once, until the resend arrives).
                            if !resending {
                                resending = true
                                var again = request
                                again.from = offset
                                await send(again, to: Self.requestChannel, kind: "request")
                            }
                        } else if at + bytes.count > offset {
                            resending = false
                            let piece = String(decoding: bytes[(offset - at)...], as: UTF8.self)
                            offset = at + bytes.count
                            output.yield(.chunk(piece, end: offset))
                            lastOutput = clock.now
                        }
                    } else if let end = message.end {
                        if let at = message.at, at > offset {
                            var again = request
                            again.from = offset
                            await send(again, to: Self.requestChannel, kind: "request")
                            continue
                        }
                        output.yield(RelayMessage.event(end, threadID: turn.threadID, turnID: turn.id, reply: ""))
                        break loop
                    }
                case .tick:
                    let now = clock.now
                    if now - lastOutput >= pingInterval {
                        output.yield(.ping)
                        lastOutput = now
                    }
                    if let finished = finishedRow, now - finished.seen >= .seconds(1) {
                        // The owner's own end did not come (it stopped after storing): the row ends the stream.
                        finish(from: finished.turn)
                        break loop
                    }
                    guard finishedRow == nil, now - lastPoll >= (heardOwner ? .seconds(2) : .milliseconds(500)) else {
                        continue
                    }
                    lastPoll = now
                    guard let row = try? await repository.recoverIfExpired(userID: turn.userID, turnID: turn.id) else {
                        continue
                    }
                    if row.status != .streaming {
                        // The owner answered before: give its end message a moment; else the row is the answer.
                        if heardOwner {
                            finishedRow = (row, now)
                        } else {
                            finish(from: row)
                            break loop
                        }
                    }
                }
            }
            group.cancelAll()
        }
    }

    /// Asks the turn's owner to stop it; true once the owner confirmed that the ending is stored.
    func cancel(_ turn: Turn, wait: Duration) async -> Bool {
        let (inbox, post) = AsyncStream<FollowerInput>.makeStream(bufferingPolicy: .unbounded)
        let sub = UUID()
        let accepted = state.withLock { state -> Bool in
            guard state.running else { return false }
            state.followers[sub] = post
            return true
        }
        guard accepted else { return false }
        defer {
            _ = state.withLock { $0.followers.removeValue(forKey: sub) }
            post.finish()
        }
        await send(
            RelayMessage(sub: sub, op: .cancel, turn: turn.id, to: instanceChannel), to: Self.requestChannel,
            kind: "request")
        let acknowledged = await withDeadline(wait + .milliseconds(500)) { () async -> Bool in
            for await input in inbox {
                if case .message(let message) = input, message.ack == true { return true }
            }
            return false
        }
        if case .success(true)? = acknowledged { return true }
        return false
    }

    /// Runs `work` until it returns or `stop` fires (which cancels it).
    private func run(until stop: StopSignal, _ work: @escaping @Sendable () async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await work() }
            group.addTask { await stop.wait() }
            _ = await group.next()
            group.cancelAll()
        }
    }
}
