import Foundation

/// Runs a program to completion with `posix_spawn` + `waitpid`, output captured in a temporary file.
///
/// Foundation's `Process` is avoided on purpose: `pg_ctl start` leaves a daemon behind that inherits descriptors,
/// and `Process.waitUntilExit()` then never returns on Linux. Blocking: call it on a dedicated thread.
enum Subprocess {
    struct Output {
        var exitCode: Int32
        var output: String
    }

    static func run(_ path: String, _ arguments: [String]) throws -> Output {
        let outputPath = NSTemporaryDirectory() + "agent-service-\(getpid())-\(UUID().uuidString).log"
        defer { unlink(outputPath) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else is inherited: the server outlives this call and would otherwise keep every socket the parent
        // had open (curl's are not close-on-exec), and under runuser's default limit of 1,024 descriptors it then
        // fails with "insufficient file descriptors available to start server process".
        closeInheritedDescriptors(&actions)

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard spawned == 0 else {
            throw StoreError(
                .embeddedPostgres, "local PostgreSQL: cannot run \(path) (\(String(cString: strerror(spawned))))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { break }
        }
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // WIFEXITED / WEXITSTATUS are macros Swift does not import.
        let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(exitCode: exitCode, output: output)
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
