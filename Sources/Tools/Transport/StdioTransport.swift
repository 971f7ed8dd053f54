import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An MCP server as a child process: newline-delimited JSON-RPC on its stdin and stdout; its stderr goes to ours.
///
/// Spawned with `posix_spawn` (never Foundation's `Process`, which crashes a process with many descriptors open on
/// Linux). One dedicated thread reads stdout and one writes stdin, so neither a chatty nor a stuck server ever blocks
/// Swift's cooperative pool. The child gets only a few variables of the service's environment (`PATH`, `HOME`,
/// `LANG`, `LC_ALL`, `TMPDIR`, `USER`) plus its configured `env`: secrets such as `ANTHROPIC_API_KEY` or
/// `DATABASE_URL` never reach a tool server.
final class StdioTransport: MCPTransport, @unchecked Sendable {  // mutable state lives in `state` (a Mutex)
    private struct State {
        var pid: pid_t = 0
        var stdinFD: Int32 = -1
        var outbox: [[UInt8]] = []
        var closing = false
        var exitStatus: Int32?
    }

    static let inheritedVariables = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"]
    let command: String
    let arguments: [String]
    let environment: [String: String]
    private let state = Mutex(State())
    private let outboxSignal = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)

    init(command: String, arguments: [String], environment: [String: String]) {
        self.command = command
        self.arguments = arguments
        self.environment = environment
    }

    func start(_ handlers: TransportHandlers) throws {
        // A write to a pipe whose reader died must fail with EPIPE, not kill the service.
        signal(SIGPIPE, SIG_IGN)
        let executable = try Self.resolve(command)
        var inheritedEnvironment: [String: String] = [:]
        for name in Self.inheritedVariables {
            if let value = ProcessInfo.processInfo.environment[name] { inheritedEnvironment[name] = value }
        }
        let childEnvironment = inheritedEnvironment.merging(environment) { $1 }
        let (pid, stdinFD, stdoutFD) = try Self.spawn(executable, arguments, childEnvironment)
        state.withLock {
            $0.pid = pid
            $0.stdinFD = stdinFD
        }
        let reader = Thread { [self] in readLoop(stdoutFD, handlers) }
        reader.name = "mcp-stdio-read"
        reader.start()
        let writer = Thread { [self] in writeLoop() }
        writer.name = "mcp-stdio-write"
        writer.start()
    }

    func send(_ message: [UInt8], requestID: Int?) {
        let queued = state.withLock { state -> Bool in
            guard !state.closing, state.stdinFD >= 0 else { return false }
            state.outbox.append(message + [UInt8(ascii: "\n")])
            return true
        }
        if queued { outboxSignal.signal() }
    }

    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread { [self] in
                terminate(grace: .seconds(2))
                continuation.resume()
            }
            thread.name = "mcp-stdio-close"
            thread.start()
        }
    }

    // MARK: - Threads

    private func readLoop(_ fd: Int32, _ handlers: TransportHandlers) {
        var framer = MessageFramer()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var reason = "the tool server exited"
        reading: while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            for output in framer.feed(buffer[0..<count]) {
                switch output {
                case .message(let bytes): handlers.message(bytes)
                case .tooLarge:
                    reason = "the tool server sent a message larger than \(MessageFramer.maxMessageBytes) bytes"
                    break reading
                }
            }
        }
        Glibc.close(fd)
        // Whatever the reason, this connection is over: make sure the process is gone and reaped.
        terminate(grace: .milliseconds(500))
        handlers.closed(reason)
    }

    private func writeLoop() {
        while true {
            outboxSignal.wait()
            let (message, fd, closing) = state.withLock { state -> ([UInt8]?, Int32, Bool) in
                (state.outbox.isEmpty ? nil : state.outbox.removeFirst(), state.stdinFD, state.closing)
            }
            if closing || fd < 0 { return }
            guard let message else { continue }
            var written = 0
            while written < message.count {
                let count = message[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { return }  // EPIPE: the reader thread sees the exit and reports it.
                written += count
            }
        }
    }

    /// Closes stdin, waits up to `grace` for an exit, then SIGTERM, waits `grace` again, then SIGKILL; reaps the child.
    /// Blocking: only on a transport thread.
    private func terminate(grace: Duration) {
        let (pid, stdinFD, alreadyClosing) = state.withLock { state -> (pid_t, Int32, Bool) in
            let snapshot = (state.pid, state.stdinFD, state.closing)
            state.closing = true
            state.stdinFD = -1
            return snapshot
        }
        if alreadyClosing {
            // Another thread is terminating it; wait for that to finish.
            if pid > 0 { exited.wait(); exited.signal() }
            return
        }
        outboxSignal.signal()
        if stdinFD >= 0 { Glibc.close(stdinFD) }
        guard pid > 0 else { return }
        if !waitForExit(pid, within: grace) {
            kill(pid, SIGTERM)
            if !waitForExit(pid, within: grace) {
                kill(pid, SIGKILL)
                _ = waitForExit(pid, within: .seconds(3600))
            }
        }
        exited.signal()
    }

    private func waitForExit(_ pid: pid_t, within: Duration) -> Bool {
        let deadline = ContinuousClock.now + within
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid || (result < 0 && errno == ECHILD) {
                state.withLock { $0.exitStatus = status }
                return true
            }
            if ContinuousClock.now >= deadline { return false }
            usleep(10_000)
        }
    }

    // MARK: - Spawning

    private static func resolve(_ command: String) throws -> String {
        if command.contains("/") { return command }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(command)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw MCPError("command '\(command)' not found on PATH")
    }

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw MCPError("cannot create a pipe: \(String(cString: strerror(errno)))") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    private static func spawn(_ executable: String, _ arguments: [String], _ environment: [String: String]) throws
        -> (pid_t, stdin: Int32, stdout: Int32)
    {
        let input = try makePipe()
        let output: (read: Int32, write: Int32)
        do { output = try makePipe() } catch {
            Glibc.close(input.read)
            Glibc.close(input.write)
            throw error
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input.read, 0)
        posix_spawn_file_actions_adddup2(&actions, output.write, 1)
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var signals = sigset_t()
        sigemptyset(&signals)
        posix_spawnattr_setsigmask(&attributes, &signals)
        sigfillset(&signals)
        posix_spawnattr_setsigdefault(&attributes, &signals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        Glibc.close(input.read)
        Glibc.close(output.write)
        guard spawned == 0 else {
            Glibc.close(input.write)
            Glibc.close(output.read)
            throw MCPError("cannot run \(executable): \(String(cString: strerror(spawned)))")
        }
        return (pid, input.write, output.read)
    }
}
