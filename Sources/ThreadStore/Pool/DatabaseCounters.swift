import Synchronization

/// Shared atomic counters behind `DatabaseStatistics`.
final class DatabaseCounters: Sendable {
    let roundTrips = Atomic<Int>(0)
    let connectionsOpened = Atomic<Int>(0)
    let connectionsDiscarded = Atomic<Int>(0)

    var snapshot: DatabaseStatistics {
        DatabaseStatistics(
            roundTrips: roundTrips.load(ordering: .relaxed),
            connectionsOpened: connectionsOpened.load(ordering: .relaxed),
            connectionsDiscarded: connectionsDiscarded.load(ordering: .relaxed))
    }
}
