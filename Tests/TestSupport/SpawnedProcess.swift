import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn`, for tests that run the built binaries.
///
/// Foundation's `Process` is avoided on purpose: on Linux, `Process.run()` over-reads a `dirent` while it looks for
/// the highest open descriptor (swiftlang/swift-corelibs-foundation#5472) and crashes a process that has many
/// descriptors open, which the test process has.
///
/// `read(_:)`, `readAll(_:)` and `waitUntilExit()` block: call them on a `Thread` of their own, never on Swift's
/// cooperative pool. `waitForExit()` is the async way to wait.
public final class SpawnedProcess: Sendable {
    public enum Input: Sendable {
        /// `/dev/null`.
        case null
        /// A pipe that holds these bytes, then end of file. Written before the child starts, so at most the pipe's
        /// capacity (64 KiB).
        case bytes([UInt8])
    }

    public enum Output: Sendable {
        /// `/dev/null`.
        case null
        /// A pipe, read with `read(_:)` or `readAll(_:)`. Read it continuously, or the child blocks once it is full.
        case pipe
    }

    public enum Stream: Sendable {
        case standardOutput, standardError
    }

    public let processIdentifier: Int32
    /// The parent's read ends (-1: not a pipe); closed in `deinit`, so never while a reader holds `self`.
    private let outputDescriptor: Int32
    private let errorDescriptor: Int32
    /// The decoded exit status once reaped: the child is reaped once, and never signalled after its pid is free.
    private let reaped = Mutex<Int32?>(nil)

    /// Starts `executable` (a path; `PATH` is not searched) with exactly `environment`; every descriptor from 3 up
    /// stays in the parent.
    public init(
        executable: String, arguments: [String] = [], environment: [String: String],
        currentDirectory: String? = nil, standardInput: Input = .null, standardOutput: Output = .null,
        standardError: Output = .null
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // The child's ends, closed in the parent once it is spawned; the parent's read ends, kept.
        var childEnds: [Int32] = []
        var outputDescriptor: Int32 = -1
        var errorDescriptor: Int32 = -1
        defer { for fd in childEnds { close(fd) } }
        func closeParentEnds() {
            if outputDescriptor >= 0 { close(outputDescriptor) }
            if errorDescriptor >= 0 { close(errorDescriptor) }
        }

        switch standardInput {
        case .null:
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        case .bytes(let bytes):
            let (readEnd, writeEnd) = try Self.makePipe()
            childEnds.append(readEnd)
            // Non-blocking so input larger than the pipe fails here instead of hanging the caller.
            _ = fcntl(writeEnd, F_SETFL, fcntl(writeEnd, F_GETFL) | O_NONBLOCK)
            var written = 0
            while written < bytes.count {
                let count = bytes[written...].withUnsafeBytes { write(writeEnd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                written += count
            }
            close(writeEnd)
            guard written == bytes.count else {
                throw SpawnError("standard input of \(bytes.count) bytes does not fit in a pipe")
            }
            posix_spawn_file_actions_adddup2(&actions, readEnd, 0)
        }
        for (output, target) in [(standardOutput, Int32(1)), (standardError, Int32(2))] {
            switch output {
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
            case .pipe:
                let readEnd: Int32
                let writeEnd: Int32
                do { (readEnd, writeEnd) = try Self.makePipe() } catch {
                    closeParentEnds()
                    throw error
                }
                childEnds.append(writeEnd)
                if target == 1 { outputDescriptor = readEnd } else { errorDescriptor = readEnd }
                posix_spawn_file_actions_adddup2(&actions, writeEnd, target)
            }
        }
        Self.closeInheritedDescriptors(&actions)

        var path = executable
        var argumentVector = [executable] + arguments
        if let currentDirectory {
            typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>)
                -> Int32
            if let symbol = dlsym(nil, "posix_spawn_file_actions_addchdir_np") {
                _ = currentDirectory.withCString { unsafeBitCast(symbol, to: AddChdir.self)(&actions, $0) }
            } else {
                // glibc before 2.29: let a shell change directory, then become the program.
                path = "/bin/sh"
                argumentVector = ["/bin/sh", "-c", #"cd -- "$0" && exec "$@""#, currentDirectory] + argumentVector
            }
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Whatever the test process blocks or ignores (SIGPIPE, say), the child starts with the defaults.
        var signals = sigset_t()
        sigemptyset(&signals)
        posix_spawnattr_setsigmask(&attributes, &signals)
        sigfillset(&signals)
        posix_spawnattr_setsigdefault(&attributes, &signals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = argumentVector.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            closeParentEnds()
            throw SpawnError("cannot run \(executable): \(String(cString: strerror(spawned)))")
        }
        self.processIdentifier = pid
        self.outputDescriptor = outputDescriptor
        self.errorDescriptor = errorDescriptor
    }

    deinit {
        if outputDescriptor >= 0 { close(outputDescriptor) }
        if errorDescriptor >= 0 { close(errorDescriptor) }
        // A child that has already exited leaves no zombie behind; one still running is left alone.
        _ = reap()
    }

    /// Whether the child has not exited yet (reaps it when it has).
    public var isRunning: Bool { reap() == nil }

    /// The exit code, or 128 + the signal that ended the child; nil while it runs.
    public var terminationStatus: Int32? { reap() }

    /// Waits for the exit and returns `terminationStatus`. Blocking: only on a thread of its own.
    public func waitUntilExit() -> Int32 {
        var delay: UInt32 = 1_000
        while true {
            if let status = reap() { return status }
            usleep(delay)
            delay = min(delay * 2, 20_000)
        }
    }

    /// Waits (polling, without blocking a thread) for the exit and returns `terminationStatus`.
    public func waitForExit() async throws -> Int32 {
        var delay = 1
        while true {
            if let status = reap() { return status }
            try await Task.sleep(for: .milliseconds(delay))
            delay = min(delay * 2, 20)
        }
    }

    /// Sends `signal` unless the child has been reaped (its pid may belong to someone else by then).
    public func send(_ signal: Int32) {
        reaped.withLock { status in
            if status == nil { _ = kill(processIdentifier, signal) }
        }
    }

    /// SIGINT.
    public func interrupt() { send(SIGINT) }

    /// SIGTERM.
    public func terminate() { send(SIGTERM) }

    /// The next bytes the child wrote to `stream` (a `.pipe`), waiting for some; empty at end of file. Blocking: only
    /// on a thread of its own.
    public func read(_ stream: Stream) -> [UInt8] {
        let fd = stream == .standardOutput ? outputDescriptor : errorDescriptor
        precondition(fd >= 0, "\(stream) is not a pipe")
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            return count > 0 ? Array(buffer[0..<count]) : []
        }
    }

    /// Everything the child writes to `stream` until it closes it. Blocking: only on a thread of its own.
    public func readAll(_ stream: Stream) -> [UInt8] {
        var all: [UInt8] = []
        while true {
            let chunk = read(stream)
            if chunk.isEmpty { return all }
            all += chunk
        }
    }

    private func reap() -> Int32? {
        reaped.withLock { cached in
            if let cached { return cached }
            var status: Int32 = 0
            let result = waitpid(processIdentifier, &status, WNOHANG)
            if result == processIdentifier {
                // WIFEXITED / WEXITSTATUS are macros Swift does not import.
                cached = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            } else if result < 0 && errno == ECHILD {
                cached = -1  // Reaped by someone else: gone, status unknown.
            }
            return cached
        }
    }

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw SpawnError("cannot create a pipe: \(String(cString: strerror(errno)))") }
        // Close-on-exec, so other children do not inherit them (Swift's Glibc module does not import pipe2; every
        // spawn here also closes descriptors from 3 up); dup2 onto 0-2 clears the flag in the child.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// Adds "close every descriptor from 3 up" to `actions` (glibc 2.34+, looked up at run time because Swift's
    /// Glibc module does not import it); on an older libc, marks the open descriptors close-on-exec instead.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
            return
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in names.compactMap({ Int32($0) }) where fd > 2 {
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
    }
}

public struct SpawnError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
