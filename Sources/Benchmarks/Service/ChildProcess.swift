import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A child process that announces its port on a log line; its output is drained so it never blocks.
///
/// Started with `posix_spawn`, not Foundation's `Process`: on Linux `Process.run()` over-reads a `dirent` while it
/// looks for the highest open descriptor (swiftlang/swift-corelibs-foundation#5472) and crashes a process with many
/// descriptors open, which a benchmark with thousands of sockets is.
final class ChildProcess: Sendable {
    let pid: Int32
    let port: Int
    /// Whether the child has been reaped (so it is reaped once, and never signalled after its pid is free).
    private let reaped = Mutex(false)

    private init(pid: Int32, port: Int) {
        self.pid = pid
        self.port = port
    }

    /// Starts `executable` and waits until a line of its stdout or stderr matches `readyPattern` (whose first
    /// group is the port).
    static func start(
        executable: String, arguments: [String], environment: [String: String], readyPattern: String,
        timeout: TimeInterval = 120
    ) async throws -> ChildProcess {
        let regex = try NSRegularExpression(pattern: readyPattern)
        let (pid, output) = try spawn(
            executable, arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        do {
            // The reading thread owns `output`: it drains it to the end (or gives up) and closes it.
            let port = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int, any Error>) in
                Thread {
                    var text = ""
                    let deadline = Date().addingTimeInterval(timeout)
                    while true {
                        var ready = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
                        let milliseconds = Int32(max(0, min(deadline.timeIntervalSinceNow, 3_600)) * 1_000)
                        let polled = poll(&ready, 1, milliseconds)
                        if polled < 0 && errno == EINTR { continue }
                        if polled == 0 { break }
                        let data = readChunk(output)
                        if data.isEmpty { break }
                        text += String(decoding: data, as: UTF8.self)
                        let range = NSRange(text.startIndex..., in: text)
                        if let match = regex.firstMatch(in: text, range: range),
                            let portRange = Range(match.range(at: 1), in: text),
                            let port = Int(text[portRange])
                        {
                            continuation.resume(returning: port)
                            while !readChunk(output).isEmpty {}
                            close(output)
                            return
                        }
                    }
                    close(output)
                    continuation.resume(
                        throwing: BenchmarkError(
                            "\(executable) \(arguments.joined(separator: " ")) did not become ready:\n\(text)"))
                }.start()
            }
            return ChildProcess(pid: pid, port: port)
        } catch {
            kill(pid, SIGTERM)
            throw error
        }
    }

    /// SIGTERM, then waits for the exit.
    func terminate() {
        reaped.withLock { reaped in
            guard !reaped else { return }
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            reaped = true
        }
    }

    /// Spawns with stdin from /dev/null and stdout and stderr into one pipe, whose read end it returns.
    private static func spawn(_ path: String, _ arguments: [String], environment: [String: String]) throws
        -> (pid: Int32, output: Int32)
    {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw BenchmarkError("cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        defer { close(fds[1]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        closeInheritedDescriptors(&actions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var signals = sigset_t()
        sigemptyset(&signals)
        posix_spawnattr_setsigmask(&attributes, &signals)
        sigfillset(&signals)
        posix_spawnattr_setsigdefault(&attributes, &signals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            close(fds[0])
            throw BenchmarkError("cannot run \(path): \(String(cString: strerror(spawned)))")
        }
        return (pid, fds[0])
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

    /// One read of `fd` (blocking); empty at end of file.
    private static func readChunk(_ fd: Int32) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            return count > 0 ? Array(buffer[0..<count]) : []
        }
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A blocking GET on a thread of its own (used only between levels).
enum HTTPGet {
    static func text(port: Int, path: String) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result { try blocking(port: port, path: path) })
            }.start()
        }
    }

    private static func blocking(port: Int, path: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw BenchmarkError("cannot connect to 127.0.0.1:\(port)") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            response += chunk[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return text }
        return String(text[split.upperBound...])
    }
}
