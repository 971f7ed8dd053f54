import Foundation
import Logging
import ServiceLifecycle
import ThreadStore

/// Keeps leases honest, on schedules of its own (never behind keep-alive pings):
/// - every quarter of the lease it renews the lease of each turn running for over a quarter of it; a turn whose
///   lease is gone (the thread was deleted, or another instance recovered it) is stopped, and a renewal that fails
///   on a database error is retried on the next round (at least half the lease remains);
/// - every half lease (at most every 30 s) it sweeps turns whose lease expired (their process died) to
///   `interrupted`, so no turn stays `streaming` and no Idempotency-Key stays "in progress" after a crash, and
///   writes spooled turn endings once the database takes them.
final class LeaseKeeper: Service, Sendable {
    let supervisor: TurnSupervisor
    let repository: ThreadRepository
    let spool: ReplySpool?
    let lease: Duration
    let sweepInterval: Duration
    let metrics: ServiceMetrics
    let logger: Logger

    init(
        supervisor: TurnSupervisor, repository: ThreadRepository, spool: ReplySpool?, lease: Duration,
        metrics: ServiceMetrics, logger: Logger
    ) {
        self.supervisor = supervisor
        self.repository = repository
        self.spool = spool
        self.lease = lease
        self.sweepInterval = min(lease / 2, .seconds(30))
        self.metrics = metrics
        self.logger = logger
    }

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.every(self.lease / 4) { await self.renew() } }
            group.addTask { await self.every(self.sweepInterval) { await self.sweep() } }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    private func every(_ interval: Duration, _ work: () async -> Void) async {
        while true {
            do { try await Task.sleep(for: interval) } catch { return }
            await work()
        }
    }

    func renew() async {
        for turn in supervisor.runningTurns() where turn.age > lease / 4 {
            do {
                // The reply so far goes with the renewal (no extra round trip): a crash loses at most a quarter lease.
                try await repository.renewLease(
                    turnID: turn.turnID, userID: turn.userID, lease: lease, partialReply: turn.slot.reply.text)
            } catch let error as StoreError where error.code == .leaseLost {
                logger.warning(
                    "a running turn lost its lease (its thread was deleted, it was recovered or stopped elsewhere); stopping it",
                    metadata: ["turn_id": "\(turn.turnID)"])
                metrics.leaseRenewal(outcome: "lost")
                supervisor.post(.leaseLost, to: turn.turnID)
            } catch {
                logger.warning(
                    "could not renew a turn's lease; retrying on the next round",
                    metadata: ["turn_id": "\(turn.turnID)", "error": "\(error)"])
                metrics.leaseRenewal(outcome: "failed")
            }
        }
    }

    func sweep() async {
        do {
            let swept = try await repository.sweepExpiredTurns()
            for id in swept {
                logger.notice(
                    "marked a turn whose lease expired interrupted (its process stopped)", metadata: ["turn_id": "\(id)"])
            }
            if !swept.isEmpty { metrics.sweptTurns(swept.count) }
        } catch {
            logger.warning("could not sweep expired turns; retrying later", metadata: ["error": "\(error)"])
        }
        await spool?.flush(into: repository)
    }
}
