import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real nginx proxying round-robin to `upstreams` (loopback ports), with the settings SSE needs: no buffering,
/// HTTP/1.1 to the upstreams, a read timeout that only a keep-alive `: ping` outlives, and failover of connects
/// (`proxy_next_upstream error timeout`: a POST already sent is never retried elsewhere).
///
/// Everything it writes (pid, error log, temp folders) stays in a folder of its own; `daemon off` keeps the master in
/// the foreground as the spawned process, with one worker. Each response carries `X-Upstream` (the instance that
/// answered), so a test can tell where a request went.
public final class Nginx: Sendable {
    public let port: Int
    let process: SpawnedProcess
    let folder: ScratchFolder

    public static var binary: String? {
        ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// The `http` block the tests use (also shown in the README).
    static func configuration(
        upstreams: [Int], port: Int, readTimeoutSeconds: Int, workerConnections: Int, folder: String
    ) -> String {
        """
        worker_processes 1;
        daemon off;
        pid \(folder)/nginx.pid;
        error_log \(folder)/error.log warn;
        \(geteuid() == 0 ? "user root;" : "")
        worker_rlimit_nofile \(workerConnections + 100);
        events { worker_connections \(workerConnections); }
        http {
            access_log off;
            client_body_temp_path \(folder)/body;
            proxy_temp_path \(folder)/proxy;
            upstream agents {
        \(upstreams.map { "        server 127.0.0.1:\($0) max_fails=1 fail_timeout=2s;" }.joined(separator: "\n"))
            }
            server {
                listen 127.0.0.1:\(port) backlog=4096;
                location / {
                    proxy_pass http://agents;
                    proxy_http_version 1.1;
                    proxy_buffering off;
                    proxy_request_buffering off;
                    proxy_read_timeout \(readTimeoutSeconds)s;
                    proxy_connect_timeout 2s;
                    proxy_next_upstream error timeout;
                    proxy_next_upstream_tries 3;
                    add_header X-Upstream $upstream_addr always;
                }
            }
        }

        """
    }

    /// - Parameters:
    ///   - workerConnections: client plus upstream connections at once (two per proxied stream).
    public static func start(
        upstreams: [Int], readTimeoutSeconds: Int = 3, workerConnections: Int = 4_096
    ) async throws -> Nginx {
        guard let binary else {
            throw SpawnError("nginx is not installed; run scripts/ensure-test-deps.sh (apt-get install nginx-light)")
        }
        let folder = try ScratchFolder(prefix: "agent-nginx")
        var lastError: any Error = SpawnError("nginx did not start")
        for _ in 0..<3 {
            let port = try FreePort.pick()
            try folder.write(
                "nginx.conf",
                configuration(
                    upstreams: upstreams, port: port, readTimeoutSeconds: readTimeoutSeconds,
                    workerConnections: workerConnections, folder: folder.path))
            // -e: the error log before the configuration is read (else the compiled-in path is opened first).
            let process = try SpawnedProcess(
                executable: binary,
                arguments: ["-p", folder.path, "-c", folder.path + "/nginx.conf", "-e", folder.path + "/error.log"],
                environment: ["PATH": "/usr/sbin:/usr/bin:/bin"])
            do {
                try await FreePort.waitUntilAccepting(port, process: process, timeout: .seconds(15)) {
                    folder.read("error.log")
                }
                return Nginx(port: port, process: process, folder: folder)
            } catch {
                lastError = error
                process.send(SIGKILL)
                _ = try? await process.waitForExit()
            }
        }
        folder.remove()
        throw lastError
    }

    private init(port: Int, process: SpawnedProcess, folder: ScratchFolder) {
        self.port = port
        self.process = process
        self.folder = folder
    }

    /// The master's process id (its one worker is its child).
    public var pid: Int32 { process.processIdentifier }

    /// nginx's error log so far.
    public var errorLog: String { folder.read("error.log") }

    /// SIGTERM (fast shutdown: open streams are closed), SIGKILL if it lingers; the worker exits with the master.
    public func stop() async {
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            process.send(SIGKILL)
            _ = try? await process.waitForExit()
        }
        folder.remove()
    }
}
