import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Loopback ports for servers that must be told their port in advance (nginx, PgBouncer, a `serve` restarted on
/// the port its proxy knows).
public enum FreePort {
    /// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0). Another process may take
    /// it before it is used: callers that bind it retry with a new one.
    public static func pick() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SpawnError("socket() failed (errno \(errno))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw SpawnError("cannot bind a loopback port (errno \(errno))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    public static func isAccepting(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Polls until `port` accepts connections, `process` exits, or `timeout` passes.
    static func waitUntilAccepting(
        _ port: Int, process: SpawnedProcess, timeout: Duration, describe: () -> String
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while !isAccepting(port) {
            guard process.isRunning else { throw SpawnError("exited before listening on \(port):\n\(describe())") }
            guard ContinuousClock.now < deadline else {
                process.send(SIGKILL)
                throw SpawnError("not listening on \(port) after \(timeout):\n\(describe())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// A private scratch folder under /tmp (0700; handed to the `postgres` OS user when `ownedByPostgres` and we are
/// root), removed by `remove()`.
struct ScratchFolder {
    let path: String

    init(prefix: String, ownedByPostgres: Bool = false) throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SpawnError("mkdtemp failed (errno \(errno))") }
        path = String(cString: made)
        if ownedByPostgres && geteuid() == 0 {
            guard let user = getpwnam("postgres") else {
                throw SpawnError("running as root but there is no `postgres` OS user to run the pooler as")
            }
            chown(path, user.pointee.pw_uid, user.pointee.pw_gid)
        }
    }

    func write(_ name: String, _ contents: String, ownedByPostgres: Bool = false) throws {
        let file = path + "/" + name
        try contents.write(toFile: file, atomically: false, encoding: .utf8)
        chmod(file, 0o600)
        if ownedByPostgres && geteuid() == 0, let user = getpwnam("postgres") {
            chown(file, user.pointee.pw_uid, user.pointee.pw_gid)
        }
    }

    func read(_ name: String) -> String {
        (try? String(contentsOfFile: path + "/" + name, encoding: .utf8)) ?? ""
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
