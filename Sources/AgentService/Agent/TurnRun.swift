import Claude
import Foundation
import Logging
import Synchronization
import ThreadStore
import Tools

/// Executes one turn: the I/O half of `TurnMachine`.
///
/// Everything the turn waits for (the upstream attempt, a write attempt, a retry timer) runs as a child task that
/// reports back through the slot's inbox, so the loop below never blocks on I/O and handles a Stop or a shutdown at
/// any moment. The machine decides (`TurnDecider`, where each event is posted, relaying text and activity to the
/// reply right there); this performs the rest in decision order: it starts and stops upstream attempts and tool
/// rounds, writes the ending (each attempt with a deadline), spools it when the machine says so, and sends the final
/// frame.
struct TurnRun: Sendable {
    struct Context: Sendable {
        var userID: UUID
        var threadID: String
        var turnID: UUID
        var request: MessagesRequest
    }

    let context: Context
    let slot: TurnSlot
    let claude: ClaudeClient
    let repository: ThreadRepository
    let spool: ReplySpool?
    let metrics: ServiceMetrics
    let logger: Logger
    let machine: TurnMachine.Configuration
    /// The tools Claude may call (the request offers their definitions).
    var tools: ToolRegistry = .empty
    /// The longest any one tool call is waited for (servers time their own calls out sooner).
    var toolDeadline: Duration = .seconds(60)
    /// A tool's output beyond this many UTF-8 bytes is cut (with a note saying so).
    var toolOutputLimit = 100_000

    /// What the executing loop keeps between decisions.
    private struct Progress {
        let start: ContinuousClock.Instant
        let log: Logger
        var latencyMs: Int?
        var entry: ReplySpool.Entry?
        var upstream: StopSignal?
        var toolRun: StopSignal?
    }

    func run() async {
        let start = ContinuousClock.now
        let decider = TurnDecider(
            machine: TurnMachine(configuration: self.machine), slot: slot, metrics: metrics, start: start)
        metrics.streamStarted()
        defer { metrics.streamEnded(duration: .now - start) }
        let log = {
            var log = logger
            log[metadataKey: "turn_id"] = "\(context.turnID)"
            log[metadataKey: "thread_id"] = "\(context.threadID)"
            return log
        }()
        var progress = Progress(start: start, log: log)

        slot.decide(with: decider.decide)
        slot.post(.begun)
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                for await decided in decider.decided {
                    if !perform(decided, &progress, in: &group, decider: decider) { break }
                }
                decider.end()
                progress.upstream?.fire()
                progress.toolRun?.fire()
                // Timers still pending, or a write attempt abandoned at its deadline: the turn is over.
                group.cancelAll()
            }
        } onCancel: {
            slot.post(.shutdown)
        }
    }

    /// Performs one decided action; false once the turn has finished.
    ///
    /// Synchronous and never inlined on purpose: the loop above awaits for the whole turn, and Swift keeps its async
    /// frame, with every temporary of this switch in it, for as long (10 KB a turn when it was inline).
    @inline(never)
    private func perform(
        _ decided: TurnDecider.Decided, _ progress: inout Progress, in group: inout DiscardingTaskGroup,
        decider: TurnDecider
    ) -> Bool {
        let log = progress.log
        switch decided.action {
        case .startUpstream(let attempt, let steps):
            if attempt > 1 { log.info("asking Claude again (attempt \(attempt))") }
            let stop = decided.attempt!
            progress.upstream = stop
            var request = context.request
            request.messages += steps
            group.addTask { await self.stream(request, until: stop) }
        case .runTools(let calls):
            let stop = StopSignal()
            progress.toolRun = stop
            group.addTask { await self.runTools(calls, until: stop, log: log) }
        case .stopTools:
            progress.toolRun?.fire()
            progress.toolRun = nil
        case .relay, .announce:
            break  // performed by the decider, where the event was posted
        case .stopUpstream:
            progress.upstream?.fire()
            progress.upstream = nil
        case .scheduleUpstreamRetry(let delay):
            group.addTask { await self.post(.upstreamRetryDue, after: delay) }
        case .persist(let ending, let timeout):
            if progress.entry == nil {
                progress.latencyMs = (ContinuousClock.now - progress.start).milliseconds
                progress.entry = makeEntry(ending, decided.machine!, decider.firstTokenMs, progress.latencyMs)
                noteEnding(ending, decided.machine!, log: log)
            }
            let write = progress.entry!
            group.addTask { await self.write(write, within: timeout, log: log) }
        case .schedulePersistRetry(let delay):
            log.warning("persisting the turn failed; retrying in \(delay)")
            group.addTask { await self.post(.persistRetryDue, after: delay) }
        case .schedulePersistDeadline(let delay):
            group.addTask { await self.post(.persistDeadlinePassed, after: delay) }
        case .spool:
            let saved = spool?.save(progress.entry!) ?? false
            if saved {
                metrics.turnSpooled()
                log.error(
                    "could not store the turn in time; spooled to \(spool!.directory.path), it is written when the database answers"
                )
            } else {
                log.error("giving up on persisting the turn; the reply is lost")
            }
            slot.post(.spooled(saved))
        case .finish(let final, let outcome):
            metrics.turnFinished(outcome: outcome)
            slot.reply.finish(
                frame(
                    final, decided.machine!, firstTokenMs: decider.firstTokenMs, latencyMs: progress.latencyMs))
            return false
        }
        return true
    }

    // MARK: Child tasks

    /// One upstream attempt, relaying its events to the inbox, until it ends or `stop` fires (which cancels it and
    /// so closes the upstream connection).
    private func stream(_ request: MessagesRequest, until stop: StopSignal) async {
        await withTaskGroup(of: Void.self) { attempt in
            attempt.addTask {
                do {
                    try await claude.stream(request).relay { slot.post(.upstream($0), from: stop) }
                    slot.post(.upstreamEnded, from: stop)
                } catch {
                    let failure =
                        (error as? ClaudeError) ?? ClaudeError(kind: .connection, message: "\(error)", isRetryable: true)
                    slot.post(.upstreamFailed(failure, jitter: Double.random(in: 0..<1)), from: stop)
                }
            }
            attempt.addTask { await stop.wait() }
            _ = await attempt.next()
            attempt.cancelAll()
        }
    }

    /// One round of tool calls, in parallel, each bounded by `toolDeadline`; reports `toolsFinished` with the results
    /// in the order of the calls, and announces each result as it arrives. `stop` abandons the calls (cancelled
    /// MCP calls answer at once; the machine ignores the late report).
    private func runTools(_ calls: [ToolCall], until stop: StopSignal, log: Logger) async {
        let started = ContinuousClock.now
        let results = await withTaskGroup(of: (Int, ToolResultBlock)?.self) { group in
            for (index, call) in calls.enumerated() {
                group.addTask {
                    let outcome = await self.call(call)
                    let result = ToolResultBlock(
                        toolUseID: call.block.id, content: outcome.text, isError: outcome.isError)
                    slot.announce(
                        .toolResult(
                            id: call.block.id, name: call.block.name, isError: outcome.isError,
                            summary: Self.summary(of: outcome.text)))
                    let known = self.tools.definitions.contains { $0.name == call.block.name }
                    metrics.toolCall(name: known ? call.block.name : "unknown", isError: outcome.isError)
                    return (index, result)
                }
            }
            group.addTask {
                await stop.wait()
                return nil
            }
            var results = [ToolResultBlock?](repeating: nil, count: calls.count)
            var missing = calls.count
            while missing > 0, let next = await group.next() {
                guard let (index, result) = next else { break }  // stopped
                results[index] = result
                missing -= 1
            }
            group.cancelAll()
            return missing == 0 ? results.compactMap { $0 } : nil
        }
        guard let results else { return }
        log.debug(
            "tool round done",
            metadata: ["tools": "\(calls.map(\.block.name))", "ms": "\((ContinuousClock.now - started).milliseconds)"])
        slot.post(.toolsFinished(results))
    }

    /// One tool call: an input that is not a JSON object is answered without calling anything; the output is made
    /// storable (no NUL, at most `toolOutputLimit` bytes).
    private func call(_ call: ToolCall) async -> ToolOutcome {
        if let problem = call.inputError {
            return ToolOutcome(text: "\(problem); send the input again as a JSON object", isError: true)
        }
        let tools = self.tools
        let input = call.block.input.canonicalText
        let callContext = ToolCallContext(userID: context.userID, threadID: context.threadID)
        let name = call.block.name
        let result = await withDeadline(toolDeadline, cancelWorkOnTimeout: true) {
            await tools.call(name: name, input: input, context: callContext)
        }
        var outcome: ToolOutcome
        switch result {
        case .success(let answered)?: outcome = answered
        case .failure?: outcome = ToolOutcome(text: "the tool call was cancelled", isError: true)
        case nil: outcome = ToolOutcome(text: "the tool timed out after \(toolDeadline)", isError: true)
        }
        outcome.text = Self.storable(outcome.text, limit: toolOutputLimit)
        return outcome
    }

    /// `text` without NUL (Postgres cannot store it) and cut to `limit` UTF-8 bytes at a character boundary.
    static func storable(_ text: String, limit: Int) -> String {
        var text = text.contains("\u{0}") ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
        let count = text.utf8.count
        guard count > limit else { return text }
        var cut = text.utf8.index(text.utf8.startIndex, offsetBy: limit)
        while cut > text.startIndex, !text.unicodeScalars.indices.contains(cut) { cut = text.utf8.index(before: cut) }
        text = String(text[..<cut]) + "\n[output cut: \(count) bytes, the first \(limit) shown]"
        return text
    }

    /// The first line or 200 characters of a tool's output, for listeners.
    static func summary(of text: String) -> String {
        let first = text.prefix { $0 != "\n" }
        return first.count > 200 ? String(first.prefix(200)) + "…" : String(first)
    }

    /// One write attempt of the ending, reported as `persisted` or `persistFailed`.
    private func write(_ entry: ReplySpool.Entry, within timeout: Duration, log: Logger) async {
        let repository = self.repository
        let result = await withDeadline(timeout) { try await ReplySpool.write(entry, to: repository) }
        switch result {
        case .success?:
            slot.post(.persisted(.written))
        case .failure(let error as StoreError)? where error.code == .notFound:
            log.notice("the turn's thread was deleted while it streamed; nothing to store")
            slot.post(.persisted(.gone))
        case .failure(let error)? where !((error as? StoreError)?.isTransient ?? false):
            log.error(
                "the database refused the turn's ending; it is not stored", metadata: ["error": "\(String(reflecting: error))"])
            slot.post(.persistFailed(transient: false))
        case .failure(let error)?:
            log.warning("persisting the turn failed", metadata: ["reason": "\(error)"])
            slot.post(.persistFailed(transient: true))
        case nil:
            log.warning("persisting the turn got no answer within \(timeout)")
            slot.post(.persistFailed(transient: true))
        }
    }

    /// A timer. It sleeps even in a cancelled task (where `Task.sleep` returns at once and a retry loop would turn
    /// hot); the group cancels what is left when the turn ends, and late timers are ignored by the machine.
    private func post(_ event: TurnMachine.Event, after delay: Duration) async {
        await sleepIgnoringCancellation(delay)
        slot.post(event)
    }

    // MARK: Building what is stored and sent

    private func makeEntry(
        _ ending: TurnMachine.Ending, _ machine: TurnMachine, _ firstTokenMs: Int?, _ latencyMs: Int?
    ) -> ReplySpool.Entry {
        let reply = machine.accumulator
        let kind: ReplySpool.Entry.Kind =
            switch ending.status {
            case .completed: .completed
            case .cancelled: .cancelled
            case .interrupted: .interrupted
            default: .failed
            }
        return ReplySpool.Entry(
            kind: kind, turnID: context.turnID, userID: context.userID, reply: machine.reply,
            model: reply.model ?? context.request.model,
            stopReason: ending.status == .completed ? machine.stopReason : nil,
            error: ending.failure.map { "\($0.type): \($0.message)" }, usage: Self.usage(machine.usage),
            firstTokenMs: firstTokenMs, latencyMs: latencyMs, content: machine.content.map(Transcript.encode))
    }

    private func noteEnding(_ ending: TurnMachine.Ending, _ machine: TurnMachine, log: Logger) {
        let reply = machine.reply
        switch ending.status {
        case .completed:
            metrics.tokens(Self.usage(machine.usage))
        case .cancelled:
            log.info("turn stopped by the user after \(reply.unicodeScalars.count) characters")
        default:
            let failure = ending.failure ?? TurnMachine.internalFailure
            metrics.upstreamError(type: failure.type)
            log.warning(
                "turn failed after \(reply.unicodeScalars.count) characters; partial reply stored",
                metadata: ["error_type": "\(failure.type)", "error": "\(failure.message)"])
        }
    }

    private func frame(
        _ final: TurnMachine.Final, _ machine: TurnMachine, firstTokenMs: Int?, latencyMs: Int?
    ) -> TurnEvent {
        let reply = machine.accumulator
        switch final {
        case .done(let stopReason):
            return .done(
                TurnOutcome(
                    threadID: context.threadID, turnID: context.turnID, reply: machine.reply,
                    usage: Self.usage(machine.usage), model: reply.model ?? context.request.model, stopReason: stopReason,
                    firstTokenMs: firstTokenMs, latencyMs: latencyMs))
        case .error(let info):
            return .failed(info)
        }
    }

    static func usage(_ usage: Usage) -> TokenUsage {
        TokenUsage(
            inputTokens: usage.inputTokens, outputTokens: usage.outputTokens,
            cacheCreationInputTokens: usage.cacheCreationInputTokens, cacheReadInputTokens: usage.cacheReadInputTokens)
    }
}

/// The turn's machine, deciding each event where it is posted (`TurnSlot.decide(with:)`).
///
/// Text and activity go to the reply at once, on the posting task (for a delta: the task reading Claude's stream),
/// so a delta costs no hop to the executor; every other action is queued for the executor in the order it was
/// decided, with the machine as it was at that moment (what `persist` stores and `finish` reports).
final class TurnDecider: Sendable {
    struct Decided: Sendable {
        var action: TurnMachine.Action
        /// For `persist` and `finish` only: the machine as it decided them. (A copy kept for every action would make
        /// the next delta copy the whole reply text.)
        var machine: TurnMachine?
        /// For `startUpstream`: the attempt's stop signal, which also names its events.
        var attempt: StopSignal?
    }

    private struct State {
        var machine: TurnMachine
        var firstTokenMs: Int?
        /// The upstream attempt whose events count; those of any other (an earlier step's `upstreamEnded` that
        /// arrives after the next step started, a stopped attempt's cancellation) are dropped.
        var attempt: StopSignal?
    }

    private let state: Mutex<State>
    private let queue: AsyncStream<Decided>.Continuation
    /// The decided actions, for the executor.
    let decided: AsyncStream<Decided>
    private let slot: TurnSlot
    private let metrics: ServiceMetrics
    private let start: ContinuousClock.Instant

    init(machine: TurnMachine, slot: TurnSlot, metrics: ServiceMetrics, start: ContinuousClock.Instant) {
        state = Mutex(State(machine: machine))
        (decided, queue) = AsyncStream<Decided>.makeStream(bufferingPolicy: .unbounded)
        self.slot = slot
        self.metrics = metrics
        self.start = start
    }

    /// Milliseconds from the turn's start to its first relayed text.
    var firstTokenMs: Int? { state.withLock { $0.firstTokenMs } }

    @Sendable func decide(_ event: TurnMachine.Event, from attempt: StopSignal?) {
        state.withLock { state in
            if let attempt, attempt !== state.attempt { return }
            let now = ContinuousClock.now
            for action in state.machine.handle(event, at: now) {
                switch action {
                case .relay(let text):
                    if state.firstTokenMs == nil {
                        let elapsed = now - start
                        state.firstTokenMs = elapsed.milliseconds
                        metrics.firstChunk(after: elapsed)
                    }
                    slot.relay(text)
                case .announce(let activity):
                    slot.announce(activity)
                case .startUpstream:
                    let attempt = StopSignal()
                    state.attempt = attempt
                    queue.yield(Decided(action: action, attempt: attempt))
                case .stopUpstream:
                    state.attempt = nil
                    queue.yield(Decided(action: action))
                case .persist, .finish:
                    queue.yield(Decided(action: action, machine: state.machine))
                default:
                    queue.yield(Decided(action: action))
                }
            }
        }
    }

    /// The executor stopped listening (the turn finished).
    func end() {
        queue.finish()
    }
}

/// A one-shot switch a task can wait on; firing it (or cancelling the waiter) ends the wait.
final class StopSignal: Sendable {
    private let state = Mutex<(fired: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func fire() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.fired = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let fired = state.withLock { state -> Bool in
                    if state.fired || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if fired { continuation.resume() }
            }
        } onCancel: {
            fire()
        }
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int {
        Int(components.seconds) * 1_000 + Int(components.attoseconds / 1_000_000_000_000_000)
    }
}
