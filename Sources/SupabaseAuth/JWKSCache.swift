import Foundation
import JWTKit
import Logging
import Synchronization

/// The project's public signing keys (its JWKS), fetched on demand and kept in memory.
///
/// - Keys older than `ttl` are still used while a background refresh runs, and keep working when the endpoint is
///   down (a refresh that fails changes nothing).
/// - A token with an unknown `kid` refetches at once, at most once per `unknownKeyRefetchInterval`, then is rejected.
/// - Only EC P-256 keys (ES256) and RSA keys (RS256) are kept; each key can verify only its own algorithm.
/// - Fetches are single-flight: concurrent requests wait for the same one.
final class JWKSCache: Sendable {
    typealias Fetch = @Sendable (String) async throws -> [UInt8]

    struct Key: Sendable {
        let algorithm: any JWTAlgorithm
        /// `ES256` or `RS256`.
        let name: String
    }

    private struct State {
        var keys: [String: Key] = [:]
        var fetchedAt: ContinuousClock.Instant?
        var lastAttempt: ContinuousClock.Instant?
        /// The last refetch an unknown `kid` caused (rate-limited separately from routine refreshes).
        var lastUnknownKeyRefetch: ContinuousClock.Instant?
        var inFlight: Task<Void, Never>?
    }

    let url: String
    private let ttl: Duration
    private let unknownKeyRefetchInterval: Duration
    /// After a failed fetch with no keys at all, the next try waits this long (requests meanwhile get 503 at once).
    private let failedFetchRetryInterval: Duration
    private let fetch: Fetch
    private let logger: Logger
    private let state = Mutex(State())
    private let fetchCount = Atomic<Int>(0)

    init(
        url: String, ttl: Duration, unknownKeyRefetchInterval: Duration, failedFetchRetryInterval: Duration,
        fetch: @escaping Fetch, logger: Logger
    ) {
        self.url = url
        self.ttl = ttl
        self.unknownKeyRefetchInterval = unknownKeyRefetchInterval
        self.failedFetchRetryInterval = failedFetchRetryInterval
        self.fetch = fetch
        self.logger = logger
    }

    /// How many fetches were started (tests and metrics).
    var fetches: Int { fetchCount.load(ordering: .relaxed) }

    /// The key for `kid`, fetching the JWKS when needed.
    func key(for kid: String) async throws(AuthFailure) -> Key {
        enum Plan { case use(Key, refreshInBackground: Bool), fetchAndRetry, reject, unavailable }
        let now = ContinuousClock.now
        let plan: Plan = state.withLock { state in
            if let key = state.keys[kid] {
                let stale = state.fetchedAt.map { now - $0 >= ttl } ?? true
                // While the endpoint is down, stale keys stay in use and a refresh is tried at most once per TTL
                // (or per unknown-key interval, if shorter).
                let retry = min(ttl, unknownKeyRefetchInterval)
                return .use(key, refreshInBackground: stale && mayAttempt(state, now, interval: retry))
            }
            if state.fetchedAt == nil {
                return mayAttempt(state, now, interval: failedFetchRetryInterval) ? .fetchAndRetry : .unavailable
            }
            if state.inFlight != nil { return .fetchAndRetry }
            if let last = state.lastUnknownKeyRefetch, now - last < unknownKeyRefetchInterval { return .reject }
            state.lastUnknownKeyRefetch = now
            return .fetchAndRetry
        }
        switch plan {
        case .use(let key, let refresh):
            if refresh { _ = startRefresh() }
            return key
        case .unavailable:
            throw Self.unavailable
        case .reject:
            throw Self.unknownKey
        case .fetchAndRetry:
            await startRefresh().value
            let (key, everFetched) = state.withLock { ($0.keys[kid], $0.fetchedAt != nil) }
            if let key { return key }
            throw everFetched ? Self.unknownKey : Self.unavailable
        }
    }

    /// Fetches now unless a fetch is running (then joins it).
    func refresh() async {
        await startRefresh().value
    }

    private static let unavailable = AuthFailure(
        .unavailable, "the project's signing keys (JWKS) could not be fetched yet; retry shortly")
    private static let unknownKey = AuthFailure(
        .badSignature, "bad signature: the token's key id (kid) is not among the project's signing keys")

    private func mayAttempt(_ state: State, _ now: ContinuousClock.Instant, interval: Duration) -> Bool {
        if state.inFlight != nil { return true }
        guard let last = state.lastAttempt else { return true }
        return now - last >= interval
    }

    private func startRefresh() -> Task<Void, Never> {
        state.withLock { state in
            if let running = state.inFlight { return running }
            state.lastAttempt = .now
            let task = Task { await self.load() }
            state.inFlight = task
            return task
        }
    }

    private func load() async {
        fetchCount.add(1, ordering: .relaxed)
        defer { state.withLock { $0.inFlight = nil } }
        let body: [UInt8]
        do {
            body = try await fetch(url)
        } catch {
            let cached = state.withLock { $0.keys.count }
            logger.warning(
                "could not fetch the signing keys (JWKS); \(cached == 0 ? "tokens signed with them get 503 until it works" : "the \(cached) cached key(s) stay in use")",
                metadata: ["url": "\(url)", "error": "\(error)"])
            return
        }
        let keys: [String: Key]
        do {
            keys = try await Self.parse(body, logger: logger)
        } catch {
            logger.warning(
                "the signing keys (JWKS) response is not a usable key set; cached keys stay in use",
                metadata: ["url": "\(url)", "error": "\(error)"])
            return
        }
        let previous = state.withLock { state -> Set<String> in
            defer {
                state.keys = keys
                state.fetchedAt = .now
            }
            return Set(state.keys.keys)
        }
        if previous != Set(keys.keys) {
            logger.notice(
                "signing keys (JWKS) loaded", metadata: ["kids": "\(keys.keys.sorted().joined(separator: ","))"])
        }
    }

    struct JWKSError: Error, CustomStringConvertible {
        let description: String
    }

    /// The usable keys of a JWKS document, by `kid`.
    static func parse(_ body: [UInt8], logger: Logger) async throws -> [String: Key] {
        let jwks: JWKS
        do {
            jwks = try JSONDecoder().decode(JWKS.self, from: Data(body))
        } catch {
            throw JWKSError(description: "not a JWKS document (\(error))")
        }
        var keys: [String: Key] = [:]
        for jwk in jwks.keys {
            guard let kid = jwk.keyIdentifier?.string, !kid.isEmpty else {
                logger.debug("JWKS key without kid ignored")
                continue
            }
            let name: String
            switch jwk.keyType {
            case .ecdsa where jwk.curve == .ecdsa(.p256) && (jwk.algorithm == nil || jwk.algorithm == .es256):
                name = "ES256"
            case .rsa where jwk.algorithm == nil || jwk.algorithm == .rs256:
                name = "RS256"
            default:
                logger.debug("JWKS key of an unsupported type or algorithm ignored", metadata: ["kid": "\(kid)"])
                continue
            }
            do {
                let collection = JWTKeyCollection()
                try await collection.add(jwk: jwk)
                let algorithm = try await collection.getKey(for: JWKIdentifier(string: kid), alg: name)
                keys[kid] = Key(algorithm: algorithm, name: name)
            } catch {
                logger.warning("JWKS key could not be loaded; ignored", metadata: ["kid": "\(kid)", "error": "\(error)"])
            }
        }
        return keys
    }
}
