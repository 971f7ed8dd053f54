import Prometheus
import Synchronization
import ThreadStore

/// The service's Prometheus metrics, exposed at `GET /metrics`.
///
/// Names follow Prometheus conventions (`_total` counters, `_seconds` histograms). Label values are bounded sets
/// (outcomes and upstream error types), never user data.
final class ServiceMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let activeStreams: Gauge
    private let timeToFirstChunk: DurationHistogram
    private let streamDuration: DurationHistogram
    private let admission: DurationHistogram
    private let inputTokens: Counter
    private let outputTokens: Counter
    private let cacheReadTokens: Counter
    private let cacheWriteTokens: Counter
    private let active = Atomic<Int>(0)

    private static let latencyBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2_500), .seconds(5), .seconds(10),
    ]
    private static let durationBuckets: [Duration] = [
        .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30),
        .seconds(60), .seconds(120), .seconds(300),
    ]

    private static func name(_ metric: String, unit: String = "", help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "agent", metricName: metric, unitName: unit, helpText: help)
    }

    private static var tokensName: MetricNameDescriptor {
        name("tokens", unit: "total", help: "Tokens reported by Claude, by kind.")
    }
    private static var turnsName: MetricNameDescriptor {
        name("turns", unit: "total", help: "Turns finished, by outcome.")
    }
    private static var authFailuresName: MetricNameDescriptor {
        name("auth_failures", unit: "total", help: "Requests refused by token verification, by failed check.")
    }
    private static var upstreamErrorsName: MetricNameDescriptor {
        name("upstream_errors", unit: "total", help: "Claude errors by type, after the client's retries.")
    }

    init() {
        activeStreams = registry.makeGauge(descriptor: Self.name("active_streams", help: "Turns streaming right now."))
        timeToFirstChunk = registry.makeDurationHistogram(
            descriptor: Self.name(
                "time_to_first_chunk", unit: "seconds",
                help: "From the start of a turn's Claude request to its first text delta."),
            buckets: Self.latencyBuckets)
        streamDuration = registry.makeDurationHistogram(
            descriptor: Self.name(
                "stream_duration", unit: "seconds",
                help: "From the start of a turn's Claude request to the end of its stream."),
            buckets: Self.durationBuckets)
        admission = registry.makeDurationHistogram(
            descriptor: Self.name(
                "turn_admission", unit: "seconds",
                help: "From a request's arrival to its Claude request being sent: validation and begin-turn."),
            buckets: Self.latencyBuckets)
        inputTokens = registry.makeCounter(descriptor: Self.tokensName, labels: [("kind", "input")])
        outputTokens = registry.makeCounter(descriptor: Self.tokensName, labels: [("kind", "output")])
        cacheReadTokens = registry.makeCounter(descriptor: Self.tokensName, labels: [("kind", "cache_read")])
        cacheWriteTokens = registry.makeCounter(descriptor: Self.tokensName, labels: [("kind", "cache_write")])
        for outcome in ["completed", "failed", "interrupted", "persist_failed", "spooled", "thread_deleted"] {
            _ = turnCounter(outcome)
        }
    }

    private func turnCounter(_ outcome: String) -> Counter {
        registry.makeCounter(descriptor: Self.turnsName, labels: [("outcome", outcome)])
    }

    func streamStarted() {
        activeStreams.set(Double(active.add(1, ordering: .relaxed).newValue))
    }

    func streamEnded(duration: Duration) {
        activeStreams.set(Double(active.subtract(1, ordering: .relaxed).newValue))
        streamDuration.record(duration)
    }

    func admitted(after duration: Duration) {
        admission.record(duration)
    }

    func firstChunk(after duration: Duration) {
        timeToFirstChunk.record(duration)
    }

    func turnFinished(outcome: String) {
        turnCounter(outcome).increment()
    }

    /// One tool call ended; `name` is a configured tool's name or `unknown` (the model's names are not labels).
    func toolCall(name: String, isError: Bool) {
        registry.makeCounter(
            descriptor: Self.name("tool_calls", unit: "total", help: "Tool calls run for Claude, by tool and outcome."),
            labels: [("tool", Self.boundedLabel(name)), ("outcome", isError ? "error" : "ok")]
        ).increment()
    }

    func turnRefused(reason: String) {
        registry.makeCounter(
            descriptor: Self.name("turns_refused", unit: "total", help: "Turns refused at admission (429), by limit."),
            labels: [("reason", Self.boundedLabel(reason))]
        ).increment()
    }

    func leaseRenewal(outcome: String) {
        registry.makeCounter(
            descriptor: Self.name(
                "lease_renewal_failures", unit: "total", help: "Lease renewals that failed, by outcome (lost, failed)."),
            labels: [("outcome", Self.boundedLabel(outcome))]
        ).increment()
    }

    func turnSpooled() {
        registry.makeCounter(
            descriptor: Self.name(
                "turns_spooled", unit: "total", help: "Turn endings saved to the local spool because the database could not take them.")
        ).increment()
    }

    /// One `NOTIFY` sent to another instance, by kind (request, text, end, ack).
    func relayNotified(kind: String) {
        registry.makeCounter(
            descriptor: Self.name(
                "relay_notifications", unit: "total",
                help: "NOTIFY messages sent to other instances (resume and stop), by kind."),
            labels: [("kind", Self.boundedLabel(kind))]
        ).increment()
    }

    /// Streams being followed right now, by where the turn runs (here, another instance, stored).
    func resumeStarted(source: String) {
        registry.makeCounter(
            descriptor: Self.name("resumes", unit: "total", help: "Resumed streams, by where the reply came from."),
            labels: [("source", Self.boundedLabel(source))]
        ).increment()
    }

    func sweptTurns(_ count: Int) {
        registry.makeCounter(
            descriptor: Self.name(
                "turns_swept", unit: "total", help: "Streaming turns with an expired lease marked interrupted.")
        ).increment(by: Int64(count))
    }

    func authFailed(reason: String) {
        registry.makeCounter(descriptor: Self.authFailuresName, labels: [("reason", Self.boundedLabel(reason))])
            .increment()
    }

    func upstreamError(type: String) {
        registry.makeCounter(descriptor: Self.upstreamErrorsName, labels: [("type", Self.boundedLabel(type))])
            .increment()
    }

    func tokens(_ usage: TokenUsage) {
        inputTokens.increment(by: Int64(usage.inputTokens))
        outputTokens.increment(by: Int64(usage.outputTokens))
        cacheReadTokens.increment(by: Int64(usage.cacheReadInputTokens))
        cacheWriteTokens.increment(by: Int64(usage.cacheCreationInputTokens))
    }

    /// The exposition text, with the database pool's own counters appended (they live in ThreadStore).
    func render(database: DatabaseStatistics) -> String {
        registry.emitToString() + """
            # HELP agent_db_round_trips_total Round trips to Postgres (a statement or a pipelined batch each).
            # TYPE agent_db_round_trips_total counter
            agent_db_round_trips_total \(database.roundTrips)
            # HELP agent_db_connections_opened_total Postgres connections opened, reconnects included.
            # TYPE agent_db_connections_opened_total counter
            agent_db_connections_opened_total \(database.connectionsOpened)
            # HELP agent_db_connections_discarded_total Postgres connections found broken and replaced.
            # TYPE agent_db_connections_discarded_total counter
            agent_db_connections_discarded_total \(database.connectionsDiscarded)

            """
    }

    /// Keeps label cardinality bounded even if an upstream invents error types.
    private static func boundedLabel(_ value: String) -> String {
        let cleaned = value.prefix(40).filter { $0.isLetter || $0.isNumber || $0 == "_" }
        return cleaned.isEmpty ? "unknown" : String(cleaned)
    }
}
