import EventLoopExecution
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ThreadStore

/// The HTTP API of DESIGN.md ("HTTP API"), seed-compatible: routes, validation, SSE relay, error mapping.
struct AgentAPI: Sendable {
    let agent: Agent
    let repository: ThreadRepository
    let database: Database
    let metrics: ServiceMetrics
    let configuration: ServiceConfiguration
    let authenticator: Authenticator
    let logger: Logger

    /// Paths and their methods, for 405 answers.
    static let routes: [(pattern: [String], methods: [String])] = [
        (["query_stream"], ["POST", "OPTIONS"]), (["query"], ["POST", "OPTIONS"]), (["chat"], ["POST", "OPTIONS"]),
        (["threads"], ["GET", "OPTIONS"]), (["threads", "*"], ["DELETE", "OPTIONS"]),
        (["threads", "*", "messages"], ["GET", "OPTIONS"]), (["threads", "*", "stream"], ["GET", "OPTIONS"]),
        (["threads", "*", "cancel"], ["POST", "OPTIONS"]), (["api", "chat"], ["POST", "OPTIONS"]),
        (["api", "chat", "*", "stream"], ["GET", "OPTIONS"]), (["health"], ["GET", "HEAD"]), (["metrics"], ["GET"]),
    ]

    func buildRouter() -> Router<AgentRequestContext> {
        let router = Router(context: AgentRequestContext.self)
        // CORS outermost, so that the JSON errors produced inside carry its headers.
        router.add(middleware: AllowedOriginsMiddleware(origins: configuration.corsAllowedOrigins))
        router.add(middleware: JSONErrorMiddleware(routes: Self.routes + WebUI.routes(configuration), logger: logger))
        router.post("query_stream") { request, context in try await self.queryStream(request, context: context) }
        router.post("query") { request, context in try await self.query(request, context: context) }
        router.post("chat") { request, context in try await self.query(request, context: context) }
        router.get("threads") { request, context in try await self.listThreads(request, context: context) }
        router.get("threads/:thread_id/messages") { request, context in
            try await self.messages(request, context: context)
        }
        router.delete("threads/:thread_id") { request, context in try await self.deleteThread(request, context: context)
        }
        router.get("threads/:thread_id/stream") { request, context in try await self.resume(request, context: context) }
        router.post("threads/:thread_id/cancel") { request, context in try await self.cancel(request, context: context) }
        router.post("api/chat") { request, context in try await self.aiChat(request, context: context) }
        router.get("api/chat/:thread_id/stream") { request, context in
            try await self.aiChatResume(request, context: context)
        }
        router.get("health") { request, context in await self.health() }
        router.get("metrics") { request, _ in
            if let token = self.configuration.metricsToken {
                let presented = (try? Authenticator.bearerToken(request.headers)) ?? ""
                guard Authenticator.constantTimeEquals(presented, token) else {
                    throw APIError.unauthorized("missing or wrong METRICS_TOKEN: send Authorization: Bearer <METRICS_TOKEN>")
                }
            }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: self.metrics.render(database: self.database.statistics))))
        }
        WebUI(configuration: configuration).register(on: router)
        return router
    }

    // MARK: Turns

    /// Runs `work` in a child task and returns its result.
    ///
    /// Swift's task allocator keeps a task's slabs at their peak size until the task ends. Admitting a turn is the
    /// deepest stack a stream's connection task ever has: routing, middleware, identity, the body, and begin-turn in
    /// Postgres. Run inline, that peak (about 16 KB) stayed with the connection for the whole reply. In a child task
    /// it is freed as soon as the turn starts (`agent-bench service` at 10,000 streams, BENCHMARKS.md). Resuming a
    /// stream (`agent.follow`) is run the same way.
    private static func inChildTask<T: Sendable, E: Error>(
        _ work: @Sendable () async throws(E) -> T
    ) async throws(E) -> T {
        async let result = outcome(of: work)
        return try await result.get()
    }

    private static func outcome<T, E: Error>(of work: () async throws(E) -> T) async -> Result<T, E> {
        do { return .success(try await work()) } catch { return .failure(error) }
    }

    private func admit(_ request: Request, context: AgentRequestContext) async throws -> TurnHandle {
        try await Self.inChildTask { try await startTurn(request, context: context) }
    }

    private func startTurn(_ request: Request, context: AgentRequestContext) async throws -> TurnHandle {
        let arrival = ContinuousClock.now
        defer { metrics.admitted(after: .now - arrival) }
        // Identity first: an unauthenticated request costs no body read and no parsing.
        let identity = try await authenticator.identify(request)
        let body = try await Self.readBody(
            request, limit: configuration.maxBodyBytes, within: .seconds(configuration.requestReadTimeoutSeconds))
        let query = try QueryRequest.parse(
            body: body, headers: request.headers, limits: .init(maxQuestionLength: configuration.maxQuestionLength))
        let user = try identity.user(claimed: query.claimedUserID)
        do {
            return try await agent.startTurn(
                TurnInput(
                    userID: user, threadID: query.threadID, question: query.question, timeZone: query.timeZone,
                    idempotencyKey: query.idempotencyKey))
        } catch {
            throw Self.apiError(error)
        }
    }

    /// The whole body, which must arrive within `timeout` (408 otherwise: a client trickling bytes cannot hold a
    /// connection and a handler forever) and be at most `limit` bytes (413).
    ///
    /// Structured on purpose: the body reader is a child task that is cancelled at the deadline and always finished
    /// before this returns, because the server reads the same connection again after the handler.
    static func readBody(_ request: Request, limit: Int, within timeout: Duration) async throws -> ByteBuffer {
        enum Outcome: Sendable {
            case body(ByteBuffer)
            case tooLarge
            case timedOut
        }
        let outcome = await withTaskGroup(of: Outcome?.self) { group -> Outcome in
            group.addTask {
                var request = request
                do { return .body(try await request.collectBody(upTo: limit)) } catch { return .tooLarge }
            }
            group.addTask {
                do { try await Task.sleep(for: timeout) } catch { return nil }
                return .timedOut
            }
            var first: Outcome = .timedOut
            for await result in group {
                if let result {
                    first = result
                    break
                }
            }
            group.cancelAll()
            return first
        }
        switch outcome {
        case .body(let body): return body
        case .tooLarge: throw APIError.payloadTooLarge(limit: limit)
        case .timedOut: throw APIError.requestTimeout(seconds: Int(timeout.components.seconds))
        }
    }

    static func apiError(_ error: AgentError) -> APIError {
        switch error {
        case .threadBusy: return .threadBusy
        case .turnInProgress(let id): return .turnInProgress(id)
        case .shuttingDown: return .shuttingDown
        case .storeUnavailable: return .databaseUnavailable
        case .invalidInput(let field, let message): return .invalid(field, message)
        case .tooManyTurns(let perUser, let limit): return .tooManyTurns(perUser: perUser, limit: limit)
        case .idempotencyKeyReused(let turnID): return .idempotencyKeyReused(turnID)
        }
    }

    private func queryStream(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let handle = try await admit(request, context: context)
        let supervisor = agent.supervisor
        let turnID = handle.turnID
        return Self.eventStream(
            threadID: handle.threadID, turnID: handle.turnID, events: handle.events, logger: context.logger,
            includeThinking: try Self.wantsThinking(request), writingOn: context.eventLoop,
            onDisconnect: { supervisor.post(.clientGone, to: turnID) })
    }

    /// An SSE response relaying `events` until the final frame. A client that goes away only stops listening: the
    /// turn goes on under the supervisor, is persisted, and can be resumed.
    static func eventStream(
        threadID: String, turnID: UUID, events: AsyncStream<TurnEvent>, logger: Logger, includeThinking: Bool = false,
        writingOn eventLoop: (any EventLoop)? = nil, onDisconnect: (@Sendable () -> Void)? = nil
    ) -> Response {
        let turnKey = turnID.uuidString.lowercased()
        let headers: HTTPFields = [
            .contentType: "text/event-stream; charset=utf-8",
            .cacheControl: "no-cache, no-store",
            .xContentTypeOptions: "nosniff",
            .xAccelBuffering: "no",
            .xThreadID: threadID,
            .xTurnID: turnKey,
        ]
        // The writing loop runs on the connection's event loop (see `EventLoopTaskExecutor`).
        let executor = eventLoop.map(EventLoopTaskExecutor.init)
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await withTaskExecutorPreference(executor) {
                    for await event in events {
                        if case .activity(.thinking) = event, !includeThinking { continue }
                        do {
                            try await writer.write(
                                ServerSentEvents.frame(for: event, threadID: threadID, turnID: turnID, turnKey: turnKey))
                        } catch {
                            logger.debug("client disconnected mid-stream; the turn continues")
                            onDisconnect?()
                            throw error
                        }
                        switch event {
                        case .done, .failed: break
                        case .chunk, .ping, .activity: continue
                        }
                        break
                    }
                    try await writer.finish(nil)
                }
            })
    }

    private func query(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let handle = try await admit(request, context: context)
        var text = ""
        for await event in handle.events {
            switch event {
            case .chunk(let chunk, _): text += chunk
            case .ping, .activity: continue
            case .done(let outcome):
                return JSONResponse.make(
                    object: [
                        "response": outcome.reply, "thread_id": outcome.threadID,
                        "turn_id": outcome.turnID.uuidString.lowercased(),
                        "usage": Self.usageObject(outcome.usage), "stop_reason": outcome.stopReason as Any? ?? NSNull(),
                        "model": outcome.model as Any? ?? NSNull(),
                    ])
            case .failed(let failure):
                return JSONResponse.make(
                    status: failure.type == "interrupted" ? .serviceUnavailable : .badGateway,
                    object: [
                        "error": ["type": failure.type, "message": failure.message, "retryable": failure.retryable],
                        "response": text, "thread_id": handle.threadID,
                        "turn_id": handle.turnID.uuidString.lowercased(),
                    ])
            }
        }
        throw APIError.internalError
    }

    static func usageObject(_ usage: TokenUsage) -> [String: Int] {
        [
            "input_tokens": usage.inputTokens, "output_tokens": usage.outputTokens,
            "cache_creation_input_tokens": usage.cacheCreationInputTokens,
            "cache_read_input_tokens": usage.cacheReadInputTokens,
        ]
    }

    // MARK: Threads

    /// The user a thread request acts for: the verified token's subject, or `?user_id=` in development mode.
    private func userID(_ request: Request) async throws -> UUID {
        let identity = try await authenticator.identify(request)
        let claimed = request.uri.queryParameters["user_id"].map(String.init)
        if case .development = identity, claimed == nil {
            throw APIError.invalid("user_id", "is required (query parameter)")
        }
        return try identity.user(claimed: claimed)
    }

    private func limit(_ request: Request) throws -> Int {
        guard let text = request.uri.queryParameters["limit"].map(String.init) else { return 20 }
        guard let value = Int(text), (1...100).contains(value) else {
            throw APIError.invalid("limit", "must be an integer from 1 to 100")
        }
        return value
    }

    private func threadIDParameter(_ context: AgentRequestContext) throws -> String {
        guard let raw = context.parameters.get("thread_id") else { throw APIError.threadNotFound }
        let decoded = raw.removingPercentEncoding ?? raw
        return try QueryRequest.threadID(decoded)
    }

    private func storeCall<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreError where error.code == .threadBusy {
            throw APIError.replyStreaming
        } catch let error as StoreError {
            logger.warning("database error", metadata: ["error": "\(String(reflecting: error))"])
            throw APIError.databaseUnavailable
        }
    }

    private func listThreads(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let user = try await userID(request)
        let limit = try limit(request)
        var before: Date?
        if let text = request.uri.queryParameters["before"].map(String.init) {
            guard let date = Timestamps.parse(text), date.timeIntervalSince1970 >= 0,
                date.timeIntervalSince1970 < 253_402_300_800  // 10000-01-01
            else {
                throw APIError.invalid(
                    "before", "must be an ISO 8601 timestamp between 1970 and 9999 such as 2026-11-24T18:05:00.000Z")
            }
            before = date
        }
        let threads = try await storeCall {
            try await repository.listThreads(userID: user, limit: limit, before: before)
        }
        let items: [[String: Any]] = threads.map { thread in
            [
                "thread_id": thread.id, "title": thread.title as Any? ?? NSNull(),
                "created_at": Timestamps.format(thread.createdAt), "updated_at": Timestamps.format(thread.updatedAt),
                "turn_count": thread.turnCount,
            ]
        }
        let next: Any = threads.count == limit ? Timestamps.format(threads.last!.updatedAt) : NSNull()
        return JSONResponse.make(object: ["threads": items, "next_before": next])
    }

    private func messages(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let user = try await userID(request)
        let limit = try limit(request)
        let threadID = try threadIDParameter(context)
        var beforeSeq: Int?
        if let text = request.uri.queryParameters["before"].map(String.init) {
            guard let seq = Int(text), (1...Int(Int32.max)).contains(seq) else {
                throw APIError.invalid("before", "must be a turn number (seq) from 1 to 2147483647")
            }
            beforeSeq = seq
        }
        guard
            let turns = try await storeCall({
                try await repository.turns(userID: user, threadID: threadID, limit: limit, beforeSeq: beforeSeq)
            })
        else { throw APIError.threadNotFound }
        var messages: [[String: Any]] = []
        for turn in turns {
            let turnID = turn.id.uuidString.lowercased()
            messages.append([
                "role": "user", "content": turn.question, "turn_id": turnID, "seq": turn.seq,
                "created_at": Timestamps.format(turn.startedAt),
            ])
            // A turn running here shows its text so far (one elsewhere, its last checkpoint).
            let live = turn.status == .streaming ? agent.supervisor.slot(turn.id)?.reply.text : nil
            var reply: [String: Any] = [
                "role": "assistant", "content": live ?? turn.reply ?? "", "turn_id": turnID, "seq": turn.seq,
                "status": turn.status.rawValue, "usage": Self.usageObject(turn.usage),
            ]
            if let model = turn.model { reply["model"] = model }
            if let stop = turn.stopReason { reply["stop_reason"] = stop }
            if let error = turn.error { reply["error"] = error }
            if let ms = turn.firstTokenMs { reply["first_token_ms"] = ms }
            if let finished = turn.finishedAt { reply["created_at"] = Timestamps.format(finished) }
            messages.append(reply)
        }
        let next: Any = turns.count == limit ? (turns.first?.seq ?? 0) : NSNull()
        return JSONResponse.make(object: ["thread_id": threadID, "messages": messages, "next_before": next])
    }

    private func deleteThread(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let user = try await userID(request)
        let threadID = try threadIDParameter(context)
        guard try await storeCall({ try await repository.deleteThread(userID: user, threadID: threadID) }) else {
            throw APIError.threadNotFound
        }
        return JSONResponse.make(object: ["deleted": true, "thread_id": threadID])
    }

    // MARK: The AI SDK's UI Message Stream

    /// `POST /api/chat`: `useChat`'s request; the same turn as `/query_stream`, encoded as a UI Message Stream.
    private func aiChat(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let handle = try await Self.inChildTask { try await startChatTurn(request) }
        let supervisor = agent.supervisor
        let turnID = handle.turnID
        return Self.uiMessageStream(
            threadID: handle.threadID, turnID: handle.turnID, events: handle.events,
            includeThinking: try Self.wantsThinking(request), writingOn: context.eventLoop,
            onDisconnect: { supervisor.post(.clientGone, to: turnID) })
    }

    private func startChatTurn(_ request: Request) async throws -> TurnHandle {
        let arrival = ContinuousClock.now
        let identity = try await authenticator.identify(request)
        let body = try await Self.readBody(
            request, limit: configuration.maxBodyBytes, within: .seconds(configuration.requestReadTimeoutSeconds))
        let chat = try ChatRequest.parse(
            body: body, headers: request.headers, limits: .init(maxQuestionLength: configuration.maxQuestionLength))
        let user = try identity.user(claimed: chat.claimedUserID)
        let key = try QueryRequest.idempotencyKey(request.headers[.idempotencyKey])
        let handle: TurnHandle
        do {
            // regenerate-message asks the same question again as a new turn; the earlier reply stays in the thread.
            handle = try await agent.startTurn(
                TurnInput(
                    userID: user, threadID: chat.threadID, question: chat.question, timeZone: chat.timeZone,
                    idempotencyKey: key))
        } catch {
            throw Self.apiError(error)
        }
        metrics.admitted(after: .now - arrival)
        return handle
    }

    /// `GET /api/chat/{id}/stream`: what `useChat({resume: true})` calls on load; the running reply from its start,
    /// 204 when none runs.
    private func aiChatResume(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let user = try await userID(request)
        let threadID = try threadIDParameter(context)
        let followed: FollowedTurn?
        do {
            followed = try await Self.inChildTask { () async throws(FollowError) in
                try await agent.follow(userID: user, threadID: threadID, from: nil)
            }
        } catch FollowError.threadNotFound {
            // A chat the client made up but never sent: nothing to resume.
            return Response(status: .noContent)
        } catch {
            throw Self.apiError(error)
        }
        guard let followed else { return Response(status: .noContent) }
        return Self.uiMessageStream(
            threadID: followed.threadID, turnID: followed.turnID, events: followed.events,
            includeThinking: try Self.wantsThinking(request), writingOn: context.eventLoop)
    }

    static func uiMessageStream(
        threadID: String, turnID: UUID, events: AsyncStream<TurnEvent>, includeThinking: Bool = false,
        writingOn eventLoop: (any EventLoop)? = nil, onDisconnect: (@Sendable () -> Void)? = nil
    ) -> Response {
        let executor = eventLoop.map(EventLoopTaskExecutor.init)  // as in `eventStream`
        var headers: HTTPFields = [
            .contentType: "text/event-stream; charset=utf-8",
            .cacheControl: "no-cache, no-store",
            .xContentTypeOptions: "nosniff",
            .xAccelBuffering: "no",
            .xThreadID: threadID,
            .xTurnID: turnID.uuidString.lowercased(),
        ]
        headers[HTTPField.Name(UIMessageStream.headerName)!] = "v1"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await withTaskExecutorPreference(executor) {
                    do {
                        try await writer.write(UIMessageStream.prelude(threadID: threadID, turnID: turnID))
                        var encoder = UIMessageStream.Encoder()
                        for await event in events {
                            if case .activity(.thinking) = event, !includeThinking { continue }
                            try await writer.write(encoder.frames(for: event))
                            switch event {
                            case .done, .failed: break
                            case .chunk, .ping, .activity: continue
                            }
                            break
                        }
                    } catch {
                        onDisconnect?()
                        throw error
                    }
                    try await writer.finish(nil)
                }
            })
    }

    // MARK: Resume and stop

    /// `GET /threads/{id}/stream`: the reply from `Last-Event-ID` (or `?after=`) on, live to its end; the running
    /// turn from its start without a position; 204 when nothing runs and there is nothing to resume.
    private func resume(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let user = try await userID(request)
        let threadID = try threadIDParameter(context)
        let position = try Self.resumePosition(request)
        let followed: FollowedTurn?
        do {
            followed = try await Self.inChildTask { () async throws(FollowError) in
                try await agent.follow(userID: user, threadID: threadID, from: position)
            }
        } catch {
            throw Self.apiError(error)
        }
        guard let followed else { return Response(status: .noContent) }
        return Self.eventStream(
            threadID: followed.threadID, turnID: followed.turnID, events: followed.events, logger: context.logger,
            includeThinking: try Self.wantsThinking(request), writingOn: context.eventLoop)
    }

    /// `?thinking=true`: the client wants Claude's thinking streamed (with `CLAUDE_THINKING_BUDGET` set).
    static func wantsThinking(_ request: Request) throws -> Bool {
        guard let value = request.uri.queryParameters["thinking"].map(String.init) else { return false }
        switch value.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no", "": return false
        default: throw APIError.invalid("thinking", "thinking must be true or false")
        }
    }

    /// `POST /threads/{id}/cancel`: stops the thread's running turn, wherever it runs.
    private func cancel(_ request: Request, context: AgentRequestContext) async throws -> Response {
        let user = try await userID(request)
        let threadID = try threadIDParameter(context)
        do {
            let turnID = try await agent.stop(userID: user, threadID: threadID)
            return JSONResponse.make(
                object: ["cancelled": true, "thread_id": threadID, "turn_id": turnID.uuidString.lowercased()])
        } catch {
            throw Self.apiError(error)
        }
    }

    /// The client's position: `Last-Event-ID` (what EventSource sends on reconnect) or `?after=`, as
    /// `<turn_id>:<offset>` or `<offset>`.
    static func resumePosition(_ request: Request) throws -> ResumePosition? {
        let header = request.headers[.lastEventID]
        let query = request.uri.queryParameters["after"].map(String.init)
        guard let text = header ?? query else { return nil }
        let field = header != nil ? "Last-Event-ID" : "after"
        guard text.utf8.count <= 64, let position = ResumePosition(text) else {
            throw APIError.invalid(field, "must be the id of the last chunk received (<turn_id>:<offset>) or an offset")
        }
        return position
    }

    static func apiError(_ error: FollowError) -> APIError {
        switch error {
        case .threadNotFound: return .threadNotFound
        case .turnNotFound: return APIError(status: .notFound, type: "not_found", message: "No such turn in this thread.")
        case .beyondReply(let length):
            return .invalid("after", "is past the end of the reply (\(length) bytes so far)")
        case .noActiveTurn:
            return APIError(status: .conflict, type: "no_active_turn", message: "No reply is streaming on this thread.")
        case .storeUnavailable: return .databaseUnavailable
        }
    }

    // MARK: Operations

    private func health() async -> Response {
        let repository = self.repository
        let answered = await withDeadline(.seconds(2), cancelWorkOnTimeout: true) { try await repository.ping() }
        let database = if case .success? = answered { "ok" } else { "unavailable" }
        let status = database == "ok" ? (agent.supervisor.isDraining ? "draining" : "ok") : "degraded"
        return JSONResponse.make(
            status: database == "ok" ? .ok : .serviceUnavailable,
            object: [
                "status": status, "database": database, "model": configuration.model,
                "claude": configuration.usesOfflineStub ? "offline-stub" : "anthropic",
                "active_streams": agent.supervisor.activeCount,
            ])
    }
}

/// Timestamps on the wire: ISO 8601 UTC with milliseconds.
enum Timestamps {
    static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    static func parse(_ text: String) -> Date? {
        if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return date }
        return try? Date.ISO8601FormatStyle().parse(text)
    }
}
