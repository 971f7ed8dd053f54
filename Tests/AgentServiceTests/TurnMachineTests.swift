import Claude
import Foundation
import Testing
import ThreadStore

@testable import AgentService

/// The turn's lifecycle without I/O: every event in every state, then the paths that matter most end to end.
@Suite("Turn state machine")
struct TurnMachineTests {
    typealias Event = TurnMachine.Event
    typealias Action = TurnMachine.Action

    static let t0 = ContinuousClock.now
    static let configuration = TurnMachine.Configuration(
        upstreamRetry: RetryPolicy(maxRetries: 2, delayScale: 1), persistRetryFor: .seconds(30),
        persistFirstBackoff: .milliseconds(100), persistMaxBackoff: .seconds(2), attemptTimeout: .seconds(12),
        minimumAttemptTimeout: .milliseconds(200), shutdownBudget: .seconds(2))

    static let overloaded = ClaudeError(
        kind: .api, status: 529, type: "overloaded_error", message: "Overloaded", isRetryable: true)
    static let refused = ClaudeError(
        kind: .api, status: 400, type: "invalid_request_error", message: "bad request", isRetryable: false)

    /// Every kind of event, by name.
    enum Name: String, CaseIterable, CustomStringConvertible {
        case begun, delta, thinkingDelta, messageStop, upstreamEnded, upstreamFailedRetryable, upstreamFailedFinal
        case upstreamRetryDue, persisted, persistedGone, persistFailedTransient, persistFailedFinal, persistRetryDue
        case persistDeadlinePassed, spooled, spoolFailed, cancelRequested, clientGone, leaseLost, shutdown

        var description: String { rawValue }

        var event: Event {
            switch self {
            case .begun: .begun
            case .delta: .upstream(.textDelta(index: 0, text: "hé"))
            case .thinkingDelta: .upstream(.otherDelta(index: 1, type: "thinking_delta"))
            case .messageStop: .upstream(.messageStop)
            case .upstreamEnded: .upstreamEnded
            case .upstreamFailedRetryable: .upstreamFailed(TurnMachineTests.overloaded, jitter: 0)
            case .upstreamFailedFinal: .upstreamFailed(TurnMachineTests.refused, jitter: 0)
            case .upstreamRetryDue: .upstreamRetryDue
            case .persisted: .persisted(.written)
            case .persistedGone: .persisted(.gone)
            case .persistFailedTransient: .persistFailed(transient: true)
            case .persistFailedFinal: .persistFailed(transient: false)
            case .persistRetryDue: .persistRetryDue
            case .persistDeadlinePassed: .persistDeadlinePassed
            case .spooled: .spooled(true)
            case .spoolFailed: .spooled(false)
            case .cancelRequested: .cancelRequested
            case .clientGone: .clientGone
            case .leaseLost: .leaseLost
            case .shutdown: .shutdown
            }
        }
    }

    /// The states, each reached by a sequence of events (all at `t0`).
    enum Start: String, CaseIterable, CustomStringConvertible {
        case initial, streamingNothingDelivered, streamingDelivered, awaitingUpstreamRetry, persisting
        case awaitingPersistRetry, spooling, finished

        var description: String { rawValue }

        var path: [Event] {
            let replied: [Event] = [
                .begun, .upstream(.textDelta(index: 0, text: "Hi")),
                .upstream(.messageDelta(stopReason: "end_turn", stopSequence: nil, usage: Usage())),
                .upstream(.messageStop),
            ]
            switch self {
            case .initial: return []
            case .streamingNothingDelivered: return [.begun]
            case .streamingDelivered: return [.begun, .upstream(.textDelta(index: 0, text: "Hi"))]
            case .awaitingUpstreamRetry: return [.begun, .upstreamFailed(TurnMachineTests.overloaded, jitter: 0)]
            case .persisting: return replied
            case .awaitingPersistRetry: return replied + [.persistFailed(transient: true)]
            case .spooling: return replied + [.persistDeadlinePassed]
            case .finished: return replied + [.persisted(.written)]
            }
        }
    }

    static func machine(at start: Start) -> TurnMachine {
        var machine = TurnMachine(configuration: configuration)
        for event in start.path { _ = machine.handle(event, at: t0) }
        return machine
    }

    static let cancelled = TurnMachine.Ending(status: .cancelled)
    static let completed = TurnMachine.Ending(status: .completed)
    static let persistenceFailed = TurnFailureInfo(
        type: "persistence_failed", message: "The reply was received but could not be saved; the database is unavailable.",
        retryable: true)

    /// What each state does with each event; an event not listed for a state is ignored (no action, same state).
    static func expected(_ start: Start, _ name: Name) -> (actions: [Action], state: TurnMachine.State)? {
        let deadline = t0 + .seconds(30)
        let shutdownDeadline = t0 + .seconds(2)
        func persisting(_ ending: TurnMachine.Ending, attempt: Int = 1, deadline: ContinuousClock.Instant = deadline)
            -> TurnMachine.State
        {
            .persisting(.init(ending: ending, attempt: attempt, deadline: deadline))
        }
        let interrupted = TurnMachine.interrupted
        let shutdownPersist: [Action] = [
            .persist(interrupted, timeout: .seconds(2)), .schedulePersistDeadline(after: .seconds(2)),
        ]
        let leaseLost = Action.finish(.error(TurnMachine.leaseLostInfo), outcome: "lease_lost")
        switch (start, name) {
        case (.initial, .begun): return ([.startUpstream(attempt: 1, steps: [])], .streaming(attempt: 1, delivered: false))
        case (.initial, .cancelRequested):
            return ([.persist(cancelled, timeout: .seconds(12))], persisting(cancelled))
        case (.initial, .shutdown): return (shutdownPersist, persisting(interrupted, deadline: shutdownDeadline))
        case (.initial, .leaseLost): return ([leaseLost], .finished)

        case (.streamingNothingDelivered, .delta), (.streamingDelivered, .delta):
            return ([.relay("hé")], .streaming(attempt: 1, delivered: true))
        case (.streamingNothingDelivered, .thinkingDelta), (.streamingDelivered, .thinkingDelta):
            // Delivered (a retry would no longer be invisible) but nothing to relay: only text is the reply.
            return ([], .streaming(attempt: 1, delivered: true))
        case (.streamingNothingDelivered, .messageStop), (.streamingDelivered, .messageStop):
            return ([.persist(completed, timeout: .seconds(12))], persisting(completed))
        case (.streamingNothingDelivered, .upstreamEnded), (.streamingDelivered, .upstreamEnded):
            let truncated = TurnMachine.failed(ClaudeError(kind: .truncated, message: ""))
            return ([.persist(truncated, timeout: .seconds(12))], persisting(truncated))
        case (.streamingNothingDelivered, .upstreamFailedRetryable):
            // Nothing reached anyone: ask again after the SDKs' backoff (0.5 s, no jitter here).
            return ([.scheduleUpstreamRetry(after: .milliseconds(500))], .awaitingUpstreamRetry(attempt: 2))
        case (.streamingDelivered, .upstreamFailedRetryable):
            let failed = TurnMachine.failed(overloaded)
            return ([.persist(failed, timeout: .seconds(12))], persisting(failed))
        case (.streamingNothingDelivered, .upstreamFailedFinal), (.streamingDelivered, .upstreamFailedFinal):
            let failed = TurnMachine.failed(refused)
            return ([.persist(failed, timeout: .seconds(12))], persisting(failed))
        case (.streamingNothingDelivered, .cancelRequested), (.streamingDelivered, .cancelRequested):
            return ([.stopUpstream, .persist(cancelled, timeout: .seconds(12))], persisting(cancelled))
        case (.streamingNothingDelivered, .shutdown), (.streamingDelivered, .shutdown):
            return ([.stopUpstream] + shutdownPersist, persisting(interrupted, deadline: shutdownDeadline))
        case (.streamingNothingDelivered, .leaseLost), (.streamingDelivered, .leaseLost):
            return ([.stopUpstream, leaseLost], .finished)

        case (.awaitingUpstreamRetry, .upstreamRetryDue):
            return ([.startUpstream(attempt: 2, steps: [])], .streaming(attempt: 2, delivered: false))
        case (.awaitingUpstreamRetry, .cancelRequested):
            // Stop between attempts: nothing to stop upstream, the (empty) reply is stored as cancelled.
            return ([.persist(cancelled, timeout: .seconds(12))], persisting(cancelled))
        case (.awaitingUpstreamRetry, .shutdown):
            return (shutdownPersist, persisting(interrupted, deadline: shutdownDeadline))
        case (.awaitingUpstreamRetry, .leaseLost): return ([leaseLost], .finished)

        case (.persisting, .persisted):
            return ([.finish(.done(stopReason: "end_turn"), outcome: "completed")], .finished)
        case (.persisting, .persistedGone):
            return (
                [
                    .finish(
                        .error(
                            TurnFailureInfo(
                                type: "thread_deleted", message: "The thread was deleted while this reply was streaming.",
                                retryable: false)), outcome: "thread_deleted")
                ], .finished
            )
        case (.persisting, .persistFailedTransient):
            return (
                [.schedulePersistRetry(after: .milliseconds(100))],
                .awaitingPersistRetry(.init(ending: completed, attempt: 1, deadline: deadline))
            )
        case (.persisting, .persistFailedFinal):
            return ([.finish(.error(persistenceFailed), outcome: "persist_failed")], .finished)
        case (.persisting, .shutdown):
            return ([.schedulePersistDeadline(after: .seconds(2))], persisting(completed, deadline: shutdownDeadline))
        case (.persisting, .persistDeadlinePassed), (.awaitingPersistRetry, .persistDeadlinePassed):
            return ([.spool(completed)], .spooling(completed))

        case (.awaitingPersistRetry, .persistRetryDue):
            return ([.persist(completed, timeout: .seconds(12))], persisting(completed, attempt: 2))
        case (.awaitingPersistRetry, .shutdown):
            return (
                [.schedulePersistDeadline(after: .seconds(2))],
                .awaitingPersistRetry(.init(ending: completed, attempt: 1, deadline: shutdownDeadline))
            )

        case (.spooling, .spooled):
            let delayed = TurnFailureInfo(
                type: "persistence_delayed",
                message:
                    "The reply was received, but the database is unavailable; it is kept by the service and stored when the database is back.",
                retryable: false)
            return ([.finish(.error(delayed), outcome: "spooled")], .finished)
        case (.spooling, .spoolFailed):
            return ([.finish(.error(persistenceFailed), outcome: "persist_failed")], .finished)

        default:
            return nil
        }
    }

    @Test(
        "every event in every state: the listed ones act, all others are ignored",
        arguments: Start.allCases, Name.allCases)
    func everyEventInEveryState(start: Start, name: Name) {
        var machine = Self.machine(at: start)
        let before = machine.state
        let actions = machine.handle(name.event, at: Self.t0)
        if let (expectedActions, expectedState) = Self.expected(start, name) {
            #expect(Self.comparable(actions) == Self.comparable(expectedActions))
            #expect(machine.state == expectedState)
        } else {
            #expect(actions.isEmpty)
            #expect(machine.state == before)
        }
    }

    /// Actions with the truncation message (which names nothing testable) blanked.
    static func comparable(_ actions: [Action]) -> [Action] {
        actions.map { action in
            guard case .persist(var ending, let timeout) = action else { return action }
            if ending.failure?.type == "upstream_truncated" { ending.failure?.message = "" }
            return .persist(ending, timeout: timeout)
        }
    }

    @Test("only text is relayed, and the relayed text is exactly the text that is stored")
    func relayedIsStored() {
        var machine = TurnMachine(configuration: Self.configuration)
        var relayed = ""
        let events: [Event] = [
            .begun, .upstream(.contentBlockStart(index: 0, type: "thinking")),
            .upstream(.otherDelta(index: 0, type: "thinking_delta")), .upstream(.contentBlockStart(index: 1, type: "text")),
            .upstream(.textDelta(index: 1, text: "Grüße, ")), .upstream(.textDelta(index: 1, text: "")),
            .upstream(.textDelta(index: 1, text: "🌍!")), .upstream(.messageStop),
        ]
        for event in events {
            for case .relay(let text) in machine.handle(event, at: Self.t0) { relayed += text }
        }
        #expect(relayed == "Grüße, 🌍!")
        #expect(machine.accumulator.text == relayed)
    }

    @Test("Stop during the wait before a first-token retry: no further attempt, stored as cancelled")
    func cancelDuringFirstTokenRetry() {
        var machine = TurnMachine(configuration: Self.configuration)
        #expect(machine.handle(.begun, at: Self.t0) == [.startUpstream(attempt: 1, steps: [])])
        #expect(
            machine.handle(.upstreamFailed(Self.overloaded, jitter: 0), at: Self.t0)
                == [.scheduleUpstreamRetry(after: .milliseconds(500))])
        #expect(machine.handle(.cancelRequested, at: Self.t0) == [.persist(Self.cancelled, timeout: .seconds(12))])
        // The retry timer fires late: ignored.
        #expect(machine.handle(.upstreamRetryDue, at: Self.t0 + .seconds(1)).isEmpty)
        #expect(
            machine.handle(.persisted(.written), at: Self.t0)
                == [.finish(.done(stopReason: "cancelled"), outcome: "cancelled")])
    }

    @Test("first-token retries follow the budget and the server's retry-after, then the failure is stored")
    func upstreamRetryBudget() {
        var machine = TurnMachine(configuration: Self.configuration)
        _ = machine.handle(.begun, at: Self.t0)
        var asked = Self.overloaded
        asked.retryAfter = .seconds(3)
        #expect(machine.handle(.upstreamFailed(asked, jitter: 0), at: Self.t0) == [.scheduleUpstreamRetry(after: .seconds(3))])
        #expect(machine.handle(.upstreamRetryDue, at: Self.t0) == [.startUpstream(attempt: 2, steps: [])])
        // Second retry: 0.5 s · 2¹, shortened by the full 25 % jitter.
        #expect(
            machine.handle(.upstreamFailed(Self.overloaded, jitter: 0.9999), at: Self.t0)
                .first.map { action -> Bool in
                    guard case .scheduleUpstreamRetry(let delay) = action else { return false }
                    return delay > .milliseconds(750) && delay <= .milliseconds(751)
                } == true)
        #expect(machine.handle(.upstreamRetryDue, at: Self.t0) == [.startUpstream(attempt: 3, steps: [])])
        // Budget spent (2 retries): the third failure is stored.
        let actions = machine.handle(.upstreamFailed(Self.overloaded, jitter: 0), at: Self.t0)
        #expect(actions == [.persist(TurnMachine.failed(Self.overloaded), timeout: .seconds(12))])
    }

    @Test("shutdown during persist retries: the deadline shrinks to the budget, retries back off, then the ending is spooled")
    func shutdownDuringPersistRetries() {
        var machine = TurnMachine(configuration: Self.configuration)
        var now = Self.t0
        for event in Start.persisting.path { _ = machine.handle(event, at: now) }
        var attempts = 1
        var shutdownAt: ContinuousClock.Instant?
        var spooled = false
        // The database fails every attempt; each attempt takes 50 ms to fail. Shutdown comes at 5 s.
        while !spooled, attempts < 100 {
            now += .milliseconds(50)
            var actions = machine.handle(.persistFailed(transient: true), at: now)
            if shutdownAt == nil, now >= Self.t0 + .seconds(5) {
                shutdownAt = now
                actions += machine.handle(.shutdown, at: now)
            }
            for action in actions {
                switch action {
                case .schedulePersistRetry(let delay):
                    #expect(delay >= .milliseconds(100))
                    now += delay
                    let retry = machine.handle(.persistRetryDue, at: now)
                    guard case .persist(_, let timeout)? = retry.first else {
                        Issue.record("a retry that does not write: \(retry)")
                        return
                    }
                    #expect(timeout >= .milliseconds(200))
                    attempts += 1
                case .schedulePersistDeadline(let delay):
                    #expect(delay == .seconds(2))
                case .spool:
                    spooled = true
                default:
                    Issue.record("unexpected \(action)")
                }
            }
        }
        #expect(spooled)
        let shutdown = try! #require(shutdownAt)
        // Spooled within the 2 s budget after shutdown (plus one backoff step), never in a hot loop.
        #expect(now <= shutdown + .seconds(2) + .seconds(2))
        #expect(attempts < 20)
        #expect(machine.handle(.spooled(true), at: now).first.map { "\($0)" }?.contains("persistence_delayed") == true)
    }

    @Test("a write deadline that passes while waiting to retry spools at once; a spooled Stop still ends in done")
    func spoolOnDeadline() {
        var machine = TurnMachine(configuration: Self.configuration)
        _ = machine.handle(.begun, at: Self.t0)
        _ = machine.handle(.upstream(.textDelta(index: 0, text: "part")), at: Self.t0)
        _ = machine.handle(.cancelRequested, at: Self.t0)
        // A failure 29.95 s in: the next retry would come after the 30 s deadline.
        #expect(
            machine.handle(.persistFailed(transient: true), at: Self.t0 + .milliseconds(29_950))
                == [.spool(Self.cancelled)])
        #expect(machine.handle(.spooled(true), at: Self.t0) == [.finish(.done(stopReason: "cancelled"), outcome: "spooled")])
    }

    // MARK: Tool rounds

    /// The events of one step that asks for a tool (text, then a `tool_use` block with fragmented input).
    static func toolStep(_ id: String, text: String = "", input: [String] = ["{\"q\":", "\"x\"}"]) -> [Event] {
        var events: [Event] = [.upstream(.contentBlockStart(index: 0, type: "text"))]
        if !text.isEmpty { events.append(.upstream(.textDelta(index: 0, text: text))) }
        events.append(.upstream(.toolUseStart(index: 1, id: id, name: "lookup")))
        events += input.map { .upstream(.inputJSONDelta(index: 1, partialJSON: $0)) }
        events += [
            .upstream(.contentBlockStop(index: 1)),
            .upstream(.messageDelta(stopReason: "tool_use", stopSequence: nil, usage: Usage(inputTokens: 10, outputTokens: 5))),
            .upstream(.messageStop),
        ]
        return events
    }

    static func run(_ machine: inout TurnMachine, _ events: [Event]) -> [Action] {
        events.flatMap { machine.handle($0, at: t0) }
    }

    @Test("a tool_use step runs its calls, then the next step starts with the step and its results; text steps are separated by a blank line")
    func toolRound() throws {
        var machine = TurnMachine(configuration: Self.configuration)
        _ = machine.handle(.begun, at: Self.t0)
        let actions = Self.run(&machine, Self.toolStep("toolu_1", text: "Looking."))
        let runs = actions.compactMap { action -> [ToolCall]? in
            if case .runTools(let calls) = action { return calls }
            return nil
        }
        let calls = try #require(runs.first)
        #expect(calls.map(\.block.id) == ["toolu_1"])
        #expect(calls.first?.block.input == .object(["q": .string("x")]))
        #expect(actions.contains(.announce(.toolCall(id: "toolu_1", name: "lookup", input: #"{"q":"x"}"#))))
        #expect(machine.state == .runningTools(round: 1))
        let result = ToolResultBlock(toolUseID: "toolu_1", content: "found", isError: false)
        let next = machine.handle(.toolsFinished([result]), at: Self.t0)
        guard case .startUpstream(1, let steps)? = next.first else {
            Issue.record("no next step: \(next)")
            return
        }
        #expect(steps.count == 2)
        #expect(steps[0].role == .assistant && steps[1].blocks == [.toolResult(result)])
        let relayed = Self.run(&machine, [
            .upstream(.textDelta(index: 0, text: "Found it.")),
            .upstream(.messageDelta(stopReason: "end_turn", stopSequence: nil, usage: Usage(inputTokens: 20, outputTokens: 3))),
            .upstream(.messageStop),
        ])
        #expect(relayed.first == .relay("\n\nFound it."))
        #expect(machine.reply == "Looking.\n\nFound it.")
        #expect(machine.usage.inputTokens == 30 && machine.usage.outputTokens == 8)
        let content = try #require(machine.content)
        #expect(content.count == 3)
        #expect(relayed.contains { if case .persist(Self.completed, _) = $0 { true } else { false } })
    }

    @Test("Stop, shutdown and a lost lease while tools run stop the tools and end the turn")
    func interruptsWhileToolsRun() {
        for (event, expectedStatus) in [(Event.cancelRequested, TurnStatus.cancelled), (.shutdown, .interrupted)] {
            var machine = TurnMachine(configuration: Self.configuration)
            _ = machine.handle(.begun, at: Self.t0)
            _ = Self.run(&machine, Self.toolStep("toolu_1", text: "Wait."))
            let actions = machine.handle(event, at: Self.t0)
            #expect(actions.first == .stopTools)
            #expect(actions.contains { if case .persist(let ending, _) = $0 { ending.status == expectedStatus } else { false } })
            // The late results of abandoned calls change nothing.
            #expect(machine.handle(.toolsFinished([]), at: Self.t0).isEmpty)
            #expect(machine.content?.count == 1)
        }
        var machine = TurnMachine(configuration: Self.configuration)
        _ = machine.handle(.begun, at: Self.t0)
        _ = Self.run(&machine, Self.toolStep("toolu_1"))
        #expect(machine.handle(.leaseLost, at: Self.t0).first == .stopTools)
        #expect(machine.state == .finished)
    }

    @Test("MAX_TOOL_ROUNDS: the step after the last allowed round ends the turn with stop reason max_tool_rounds")
    func maxToolRounds() {
        var configuration = Self.configuration
        configuration.maxToolRounds = 1
        var machine = TurnMachine(configuration: configuration)
        _ = machine.handle(.begun, at: Self.t0)
        _ = Self.run(&machine, Self.toolStep("toolu_1"))
        _ = machine.handle(.toolsFinished([ToolResultBlock(toolUseID: "toolu_1", content: "ok")]), at: Self.t0)
        let actions = Self.run(&machine, Self.toolStep("toolu_2"))
        #expect(!actions.contains { if case .runTools = $0 { true } else { false } })
        #expect(machine.stopReason == "max_tool_rounds")
        #expect(machine.handle(.persisted(.written), at: Self.t0) == [
            .finish(.done(stopReason: "max_tool_rounds"), outcome: "completed")
        ])
    }

    @Test("invalid tool input is reported on the call (stored as {}), not run")
    func invalidToolInput() throws {
        var machine = TurnMachine(configuration: Self.configuration)
        _ = machine.handle(.begun, at: Self.t0)
        let actions = Self.run(&machine, Self.toolStep("toolu_1", input: ["{\"q\": tru"]))
        let calls = actions.compactMap { action -> [ToolCall]? in
            if case .runTools(let calls) = action { return calls }
            return nil
        }.first
        let call = try #require(calls?.first)
        #expect(call.inputError?.contains("not valid JSON") == true)
        #expect(call.block.input == .object([:]))
        #expect(call.inputText == "{\"q\": tru")
    }

    // MARK: The decider

    @Test("an earlier attempt's late events are dropped once the next step started (a late upstreamEnded used to fail it as truncated)")
    func staleAttemptDropped() async throws {
        let slot = TurnSlot(id: UUID(), userID: UUID(), threadID: "t")
        let decider = TurnDecider(
            machine: TurnMachine(configuration: Self.configuration), slot: slot, metrics: ServiceMetrics(),
            start: .now)
        slot.decide(with: decider.decide)
        var decided = decider.decided.makeAsyncIterator()
        slot.post(.begun)
        let first = try #require(await decided.next())
        guard case .startUpstream(1, _) = first.action, let attemptA = first.attempt else {
            Issue.record("expected the first attempt, got \(first.action)")
            return
        }
        for event in Self.toolStep("toolu_1", text: "Looking.") { slot.post(event, from: attemptA) }
        guard case .runTools = try #require(await decided.next()).action else {
            Issue.record("expected the tool round")
            return
        }
        slot.post(.toolsFinished([ToolResultBlock(toolUseID: "toolu_1", content: "found", isError: false)]))
        let second = try #require(await decided.next())
        guard case .startUpstream(1, let steps) = second.action, let attemptB = second.attempt else {
            Issue.record("expected the second step, got \(second.action)")
            return
        }
        #expect(steps.count == 2)
        #expect(attemptA !== attemptB)
        // The first step's stream ends late, after the second step started: nothing happens.
        slot.post(.upstreamEnded, from: attemptA)
        slot.post(.upstreamFailed(ClaudeError(kind: .cancelled, message: "cancelled"), jitter: 0), from: attemptA)
        // The second step's own events still count.
        slot.post(.upstream(.textDelta(index: 0, text: "Found it.")), from: attemptB)
        slot.post(.upstream(.messageStop), from: attemptB)
        let next = try #require(await decided.next())
        guard case .persist(let ending, _) = next.action else {
            Issue.record("expected the completed turn to be stored, got \(next.action)")
            return
        }
        #expect(ending.status == .completed)
        #expect(next.machine?.reply == "Looking.\n\nFound it.")
        #expect(slot.reply.text == "Looking.\n\nFound it.")
        decider.end()
    }
}
