import Foundation
import TestSupport
import Testing
import ThreadStore

@testable import AgentService

@Suite("Failures keep everything", .timeLimit(.minutes(3)))
struct FailureTests {
    /// One upstream failure mode and what the client and the database must show.
    struct Case: Sendable, CustomTestStringConvertible {
        var directive: String
        var expectDone: Bool
        var errorType: String?
        var partialWords: Int?
        var testDescription: String { directive }
    }

    static let cases: [Case] = [
        Case(directive: "[[stub:fail-first 2 then ok]]", expectDone: true),
        Case(directive: "[[stub:error 529]]", expectDone: false, errorType: "overloaded_error", partialWords: 0),
        Case(directive: "[[stub:error 400]]", expectDone: false, errorType: "invalid_request_error", partialWords: 0),
        Case(
            directive: "[[stub:midstream-error after 2]]", expectDone: false, errorType: "overloaded_error",
            partialWords: 2),
        Case(
            directive: "[[stub:truncate after 3]]", expectDone: false, errorType: "upstream_truncated", partialWords: 3),
        Case(directive: "[[stub:stall after 1]]", expectDone: false, errorType: "upstream_stalled", partialWords: 1),
        Case(directive: "[[stub:hold-open]]", expectDone: true),
    ]

    @Test("each upstream failure mode ends as documented, and the thread stays usable", arguments: cases)
    func failureMode(_ testCase: Case) async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let thread = "failures"
            let question = "\(testCase.directive) tell me something"
            let (stream, events) = try await service.streamTurn(question, user: user, thread: thread)
            #expect(stream.status == 200)
            let turnID = try #require(stream.headers["x-turn-id"].flatMap(UUID.init(uuidString:)))
            let last = try #require(events.last)
            let turn = try #require(try await service.repository.turn(userID: user, id: turnID))
            #expect(turn.question == question, "the question is kept")
            let streamed = events.compactMap(\.chunk).joined()
            if testCase.expectDone {
                #expect(last.isDone)
                #expect(turn.status == .completed)
                #expect(turn.reply == streamed)
            } else {
                let error = try #require(last.error, "the stream ends with an error event")
                #expect(error["type"] as? String == testCase.errorType)
                #expect(error["message"] is String)
                #expect(error["retryable"] is Bool)
                #expect(turn.status == .failed)
                #expect((turn.reply ?? "") == streamed, "the partial text that was streamed is kept")
                if let words = testCase.partialWords {
                    #expect(streamed.split(separator: " ").count == words)
                }
            }
            // The next turn on the same thread works.
            let next = try await service.streamTurn("and now normally", user: user, thread: thread)
            #expect(next.events.last?.isDone == true)
        }
    }

    @Test("two concurrent turns on one thread: one streams, the other gets 409 thread_busy")
    func concurrentTurns() async throws {
        try await ServiceHarness.run { service in
            let user = UUID()
            let first = try await TestHTTP.openEventStream(
                port: service.port,
                json: ServiceHarness.body("[[stub:slow 100ms x 10]] first", user: user, thread: "busy"))
            #expect(first.status == 200)
            let second = try await TestHTTP.postJSON(
                port: service.port, path: "/query_stream",
                json: ServiceHarness.body("second", user: user, thread: "busy"))
            #expect(second.status == 409)
            let error = try #require(second.json["error"] as? [String: Any])
            #expect(error["type"] as? String == "thread_busy")
            let events = await first.all()
            #expect(events.last?.isDone == true)
        }
    }

    @Test("a database outage at request time is a 503 JSON error and streams nothing")
    func databaseDownBeforeStreaming() async throws {
        try await ServiceHarness.run { service in
            await service.runtime.database.close()
            let response = try await TestHTTP.postJSON(
                port: service.port, path: "/query_stream", json: ServiceHarness.body("hello", user: UUID()))
            #expect(response.status == 503)
            #expect((response.json["error"] as? [String: Any])?["type"] as? String == "database_unavailable")
            let health = try await TestHTTP.request(port: service.port, method: "GET", path: "/health")
            #expect(health.status == 503)
            #expect(health.json["database"] as? String == "unavailable")
        }
    }

    @Test("a long reply keeps renewing its lease, so the thread stays busy instead of being taken over")
    func leaseRenewal() async throws {
        try await ServiceHarness.run(configure: {
            // Renewed every 1.5 s: a loaded machine delaying a renewal by a second or two still keeps the lease.
            $0.leaseSeconds = 6
            $0.pingIntervalSeconds = 2
            $0.claudeIdleTimeoutSeconds = 10
        }) { service in
            let user = UUID()
            let opened = ContinuousClock.now
            // 30 s long, so it still runs when the second request comes even if this process is starved for
            // seconds (as on a loaded CI machine); stopped once the check is done.
            let long = try await TestHTTP.openEventStream(
                port: service.port,
                json: ServiceHarness.body("[[stub:slow 1000ms x 30]] long reply", user: user, thread: "lease"))
            // Past the original 6 s lease: without renewal this begin would mark the running turn interrupted.
            try await Task.sleep(until: opened + .milliseconds(7_500))
            let second = try await TestHTTP.postJSON(
                port: service.port, path: "/query_stream",
                json: ServiceHarness.body("me too", user: user, thread: "lease"))
            #expect(second.status == 409)
            let stop = try await TestHTTP.request(
                port: service.port, method: "POST", path: "/threads/lease/cancel?user_id=\(user.uuidString.lowercased())")
            #expect(stop.status == 200)
            let events = await long.all()
            #expect(events.last?.isDone == true)
            #expect(events.last?.json["stop_reason"] as? String == "cancelled")
            let turns = try await service.repository.turns(userID: user, threadID: "lease", limit: 5, beforeSeq: nil)
            // One turn, stopped by the user; never taken over (that would have marked it interrupted).
            #expect(turns?.map(\.status) == [.cancelled])
        }
    }
}
