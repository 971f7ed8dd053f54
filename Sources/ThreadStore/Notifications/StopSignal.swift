import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import Synchronization

/// A one-way "stop now" flag that also wakes a thread blocked in `poll()` (a self-pipe), so `stop()` takes effect at
/// once instead of at the next timeout.
///
/// Sendable without a lock: the descriptors never change after `init`, `write()` on a non-blocking pipe may come
/// from any thread, and the pipe is closed only in `deinit`, when nobody can signal any more.
final class StopSignal: Sendable {
    /// How long one `poll()` may wait at most when the pipe could not be created (then only the flag stops a wait).
    static let fallbackPollMilliseconds: Int32 = 250

    private let flag = Atomic<Bool>(false)
    private let readEnd: Int32
    private let writeEnd: Int32

    init() {
        var descriptors: [Int32] = [-1, -1]
        if pipe(&descriptors) == 0 {
            for descriptor in descriptors {
                _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
                _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
            }
            readEnd = descriptors[0]
            writeEnd = descriptors[1]
        } else {
            readEnd = -1
            writeEnd = -1
        }
    }

    deinit {
        if readEnd >= 0 { close(readEnd) }
        if writeEnd >= 0 { close(writeEnd) }
    }

    var isSignalled: Bool { flag.load(ordering: .acquiring) }

    /// Sets the flag and wakes the waiter; idempotent, never blocks.
    func signal() {
        guard !flag.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if writeEnd >= 0 {
            var byte: UInt8 = 1
            _ = write(writeEnd, &byte, 1)
        }
    }

    enum WaitOutcome: Equatable {
        /// `poll()`'s `revents` for the socket.
        case ready(Int16)
        case timedOut
        case stopped
    }

    /// Waits until `socket` is ready for `events` (or has failed), `milliseconds` pass (-1: no limit), or the signal
    /// is set. A negative `socket` waits for the time or the signal only.
    func wait(socket: Int32, events: Int16, milliseconds: Int32) -> WaitOutcome {
        if isSignalled { return .stopped }
        var timeout = milliseconds
        if readEnd < 0, timeout < 0 || timeout > Self.fallbackPollMilliseconds {
            timeout = Self.fallbackPollMilliseconds
        }
        // The pipe is never drained: once set, the signal stays set and every later wait returns at once.
        var descriptors = [
            pollfd(fd: socket, events: events, revents: 0), pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0),
        ]
        let ready = poll(&descriptors, 2, timeout)
        if isSignalled { return .stopped }
        if ready > 0, descriptors[0].revents != 0 { return .ready(descriptors[0].revents) }
        // EINTR and a fallback wake-up before the caller's time are both spurious; the caller recomputes its timeout.
        return .timedOut
    }
}
