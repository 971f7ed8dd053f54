public import Foundation

/// The official SDKs' retry rules as a pure value: whether to retry a failed attempt and how long to wait.
///
/// - Decision: an `x-should-retry: true|false` header decides; otherwise a 429 whose body says
///   `error.details.error_code == "enforced_spend_limit_reached"` (and has no `retry-after`) is final;
///   otherwise 408, 409, 429 and every status ≥ 500 (including 529), and connection failures, are retried while
///   fewer than `maxRetries` retries were made.
/// - Delay: `retry-after-ms`, else `retry-after` (seconds or an HTTP-date), each honoured only if
///   0 < value ≤ 60 s; else `min(0.5 s · 2ⁿ, 8 s)` (n = retries so far) shortened by up to 25 % jitter. All delays
///   are multiplied by `delayScale`.
public struct RetryPolicy: Sendable, Hashable {
    /// Retries after the first attempt (so `maxRetries + 1` attempts at most).
    public var maxRetries: Int
    /// Multiplier on every delay (1.0 in production; tests use small values).
    public var delayScale: Double

    /// Creates a policy.
    public init(maxRetries: Int = 2, delayScale: Double = 1.0) {
        self.maxRetries = maxRetries
        self.delayScale = delayScale
    }

    /// Whether a response with this status, these headers and this `error.details.error_code` should be retried,
    /// ignoring the retry budget.
    public func isRetryable(status: Int, headers: HTTPHeaders, errorCode: String? = nil) -> Bool {
        if let should = headers["x-should-retry"]?.lowercased() {
            if should == "true" { return true }
            if should == "false" { return false }
        }
        if status == 429, errorCode == "enforced_spend_limit_reached", headers["retry-after"] == nil,
            headers["retry-after-ms"] == nil
        {
            return false
        }
        return status == 408 || status == 409 || status == 429 || status >= 500
    }

    /// Whether another attempt is allowed after `retriesSoFar` retries.
    public func hasBudget(retriesSoFar: Int) -> Bool {
        retriesSoFar < maxRetries
    }

    /// The delay before retry number `retriesSoFar + 1`.
    ///
    /// - Parameters:
    ///   - headers: the failed response's headers (empty for a connection failure).
    ///   - retriesSoFar: retries already made.
    ///   - jitter: a number in 0..<1 (random in production; fixed in tests).
    ///   - now: the current time, for HTTP-date `retry-after` values.
    public func delay(
        headers: HTTPHeaders, retriesSoFar: Int, jitter: Double = Double.random(in: 0..<1), now: Date = Date()
    ) -> Duration {
        delay(retryAfter: Self.requestedDelay(headers: headers, now: now), retriesSoFar: retriesSoFar, jitter: jitter)
    }

    /// The delay before retry number `retriesSoFar + 1`, given the wait the server asked for (``ClaudeError/retryAfter``).
    public func delay(retryAfter: Duration?, retriesSoFar: Int, jitter: Double) -> Duration {
        if let retryAfter {
            let seconds = Double(retryAfter.components.seconds) + Double(retryAfter.components.attoseconds) / 1e18
            return Self.duration(seconds: seconds * delayScale)
        }
        let base = min(0.5 * pow(2.0, Double(retriesSoFar)), 8.0)
        return Self.duration(seconds: base * (1 - 0.25 * jitter) * delayScale)
    }

    /// The wait a response asks for (`retry-after-ms`, else `retry-after`), when it is within 0 < value ≤ 60 s.
    static func requestedDelay(headers: HTTPHeaders, now: Date) -> Duration? {
        guard let seconds = retryAfterSeconds(headers: headers, now: now), seconds > 0, seconds <= 60 else { return nil }
        return duration(seconds: seconds)
    }

    static func retryAfterSeconds(headers: HTTPHeaders, now: Date) -> Double? {
        if let ms = headers["retry-after-ms"].flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }) {
            return ms / 1000
        }
        guard let value = headers["retry-after"]?.trimmingCharacters(in: .whitespaces) else { return nil }
        if let seconds = Double(value) { return seconds }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return date.timeIntervalSince(now)
    }

    static func duration(seconds: Double) -> Duration {
        .nanoseconds(Int64(max(0, seconds) * 1_000_000_000))
    }
}
