internal import CCurl
import Foundation
import Synchronization

/// One libcurl multi handle driven by one dedicated thread.
///
/// Other threads only enqueue commands and call `curl_multi_wakeup` (under the same lock that guards the
/// `running` flag, so a wakeup never touches a cleaned-up multi handle). Every easy/multi call happens on the
/// loop thread.
final class CurlLoop: @unchecked Sendable {  // `multi` and `transfers` are confined to the loop thread
    enum Command {
        case add(Transfer)
        case cancel(Transfer)
        case resume(Transfer)
        case discard(Transfer, within: Duration)
    }

    struct Control {
        var commands: [Command] = []
        var running = true
        var stopping = false
    }

    struct Options: Sendable {
        var connectTimeout: Duration
        var idleTimeout: Duration
        var maxConnectionsPerHost: Int
        var maxConnectionCache: Int
        var tcpKeepAlive: Duration
        var verbose: Bool
    }

    let options: Options
    private let control = Mutex(Control())
    private let multi: UnsafeMutableRawPointer
    private var transfers: [UnsafeMutableRawPointer: Transfer] = [:]
    let liveTransfers = Atomic<Int>(0)
    let openSockets = Atomic<Int>(0)
    let pauses = Atomic<Int>(0)
    private let exited = DispatchSemaphore(value: 0)

    init(options: Options) {
        CurlLoop.globalInit
        self.options = options
        multi = curl_multi_init()
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, options.maxConnectionsPerHost)
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, options.maxConnectionCache)
        let thread = Thread { [self] in run() }
        thread.name = "curl-multi"
        thread.start()
    }

    private static let globalInit: Void = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT))
    }()

    /// Enqueues a command and wakes the loop. After shutdown, an `add` fails at once.
    func enqueue(_ command: Command) {
        let accepted = control.withLock { c -> Bool in
            guard c.running, !c.stopping else { return false }
            c.commands.append(command)
            curl_multi_wakeup(multi)
            return true
        }
        if !accepted {
            switch command {
            case .add(let t), .cancel(let t):
                t.finish(HTTPClientError(kind: .shutdown, message: "the HTTP client was shut down"))
            case .resume, .discard:
                break
            }
        }
    }

    /// Asks the loop to stop; waits up to `timeout` for it to finish cleaning up.
    func stop(timeout: Duration = .seconds(5)) {
        let first = control.withLock { c -> Bool in
            guard c.running, !c.stopping else { return false }
            c.stopping = true
            curl_multi_wakeup(multi)
            return true
        }
        if first {
            let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
            _ = exited.wait(timeout: .now() + .milliseconds(ms))
        }
    }

    // MARK: Loop thread

    private func run() {
        var lastWatchdog = ContinuousClock.now
        while true {
            let (commands, stopping) = control.withLock { c in
                defer { c.commands.removeAll(keepingCapacity: true) }
                return (c.commands, c.stopping)
            }
            for command in commands { handle(command) }
            if stopping { break }
            var running: Int32 = 0
            curl_multi_perform(multi, &running)
            collectCompleted()
            let now = ContinuousClock.now
            if now - lastWatchdog >= .milliseconds(100) {
                lastWatchdog = now
                checkStalls(now: now)
            }
            curl_multi_poll(multi, nil, 0, 100, nil)
        }
        for transfer in Array(transfers.values) {
            remove(transfer, error: HTTPClientError(kind: .shutdown, message: "the HTTP client was shut down"))
        }
        let pending = control.withLock { c in
            c.running = false
            defer { c.commands.removeAll() }
            return c.commands
        }
        for case .add(let t) in pending {
            t.finish(HTTPClientError(kind: .shutdown, message: "the HTTP client was shut down"))
        }
        curl_multi_cleanup(multi)
        exited.signal()
    }

    private func handle(_ command: Command) {
        switch command {
        case .add(let transfer):
            add(transfer)
        case .cancel(let transfer):
            if let easy = transfer.easy, transfers[easy] != nil {
                remove(transfer, error: HTTPClientError(kind: .cancelled, message: "the transfer was cancelled"))
            } else {
                transfer.finish(HTTPClientError(kind: .cancelled, message: "the transfer was cancelled"))
            }
        case .discard(let transfer, let grace):
            guard let easy = transfer.easy, transfers[easy] != nil else { return }
            transfer.discardDeadline = .now + grace
            if transfer.curlPaused {
                transfer.markResumed()
                curl_easy_pause(easy, CURLPAUSE_CONT)
            }
        case .resume(let transfer):
            guard let easy = transfer.easy, transfers[easy] != nil else { return }
            transfer.markResumed()
            transfer.lastActivity = .now
            curl_easy_pause(easy, CURLPAUSE_CONT)
        }
    }

    private func add(_ transfer: Transfer) {
        if transfer.shared.withLock({ $0.cancelRequested }) {
            transfer.finish(HTTPClientError(kind: .cancelled, message: "the transfer was cancelled"))
            return
        }
        guard let easy = curl_easy_init() else {
            transfer.finish(HTTPClientError(kind: .invalidRequest, message: "curl_easy_init failed"))
            return
        }
        transfer.easy = easy
        let request = transfer.request
        let me = Unmanaged.passUnretained(transfer).toOpaque()
        let loopPointer = Unmanaged.passUnretained(self).toOpaque()
        _ = ccurl_easy_setopt_string(easy, CURLOPT_URL, request.url)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_PIPEWAIT, 1)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS))
        _ = ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(options.connectTimeout))
        let keepAlive = max(1, Self.milliseconds(options.tcpKeepAlive) / 1000)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_TCP_KEEPIDLE, keepAlive)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_TCP_KEEPINTVL, keepAlive)
        _ = ccurl_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        if options.verbose { _ = ccurl_easy_setopt_long(easy, CURLOPT_VERBOSE, 1) }
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, transfer.errorBuffer)
        switch request.method.uppercased() {
        case "GET":
            break
        case "HEAD":
            _ = ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1)
        case "POST":
            _ = ccurl_easy_setopt_long(easy, CURLOPT_POST, 1)
        default:
            _ = ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method)
        }
        if let body = request.body {
            _ = ccurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            body.withUnsafeBytes { raw in
                _ = ccurl_easy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!))
            }
        } else if request.method.uppercased() == "POST" {
            _ = ccurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, 0)
            _ = ccurl_easy_setopt_string(easy, CURLOPT_COPYPOSTFIELDS, "")
        }
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for (name, value) in request.headers {
            list = curl_slist_append(list, value.isEmpty ? "\(name);" : "\(name): \(value)")
        }
        list = curl_slist_append(list, "Expect:")
        if !request.headers.contains(where: { $0.0.lowercased() == "accept" }) {
            list = curl_slist_append(list, "Accept:")
        }
        transfer.headerList = list
        _ = ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list)
        _ = ccurl_easy_setopt_write_function(easy) { data, size, count, user in
            let transfer = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            transfer.lastActivity = .now
            if transfer.deliver(UnsafeRawBufferPointer(start: data, count: n)) { return n }
            transfer.loop?.pauses.add(1, ordering: .relaxed)
            return Int(CURL_WRITEFUNC_PAUSE)
        }
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, me)
        _ = ccurl_easy_setopt_header_function(easy) { data, size, count, user in
            let transfer = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            transfer.lastActivity = .now
            transfer.receiveHeaderLine(UnsafeRawBufferPointer(start: data, count: n))
            return n
        }
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, me)
        _ = ccurl_easy_setopt_opensocket_function(easy) { user, _, address in
            let fd = ccurl_open_socket(address)
            if fd >= 0 {
                Unmanaged<CurlLoop>.fromOpaque(user!).takeUnretainedValue().openSockets.add(1, ordering: .relaxed)
            }
            return fd
        }
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_OPENSOCKETDATA, loopPointer)
        _ = ccurl_easy_setopt_closesocket_function(easy) { user, fd in
            Unmanaged<CurlLoop>.fromOpaque(user!).takeUnretainedValue().openSockets.subtract(1, ordering: .relaxed)
            return ccurl_close_socket(fd)
        }
        _ = ccurl_easy_setopt_pointer(easy, CURLOPT_CLOSESOCKETDATA, loopPointer)
        transfer.lastActivity = .now
        transfers[easy] = transfer
        liveTransfers.add(1, ordering: .relaxed)
        let rc = curl_multi_add_handle(multi, easy)
        if rc != CURLM_OK {
            remove(transfer, error: HTTPClientError(kind: .invalidRequest, message: String(cString: curl_multi_strerror(rc))))
        }
    }

    /// Removes and cleans up a transfer, then completes it.
    private func remove(_ transfer: Transfer, error: HTTPClientError?) {
        guard let easy = transfer.easy, transfers.removeValue(forKey: easy) != nil else {
            transfer.finish(error)
            return
        }
        curl_multi_remove_handle(multi, easy)
        curl_easy_cleanup(easy)
        curl_slist_free_all(transfer.headerList)
        transfer.headerList = nil
        transfer.easy = nil
        liveTransfers.subtract(1, ordering: .relaxed)
        transfer.finish(error)
    }

    private func collectCompleted() {
        var queued: Int32 = 0
        while let message = curl_multi_info_read(multi, &queued) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle,
                let transfer = transfers[easy]
            else { continue }
            let code = ccurl_msg_result(message)
            if code == CURLE_OK {
                remove(transfer, error: nil)
            } else {
                remove(transfer, error: Self.error(for: code, transfer: transfer))
            }
        }
    }

    private func checkStalls(now: ContinuousClock.Instant) {
        let limit = options.idleTimeout
        var stalled: [Transfer] = []
        for transfer in transfers.values where !transfer.curlPaused && now - transfer.lastActivity > limit {
            stalled.append(transfer)
        }
        for transfer in stalled {
            remove(transfer, error: HTTPClientError(kind: .stalled, message: "no bytes received for \(limit)"))
        }
        let expired = transfers.values.filter { $0.discardDeadline.map { now >= $0 } ?? false }
        for transfer in expired {
            remove(transfer, error: HTTPClientError(kind: .cancelled, message: "the rest of the body was discarded"))
        }
    }

    private static func error(for code: CURLcode, transfer: Transfer) -> HTTPClientError {
        let detail = String(cString: transfer.errorBuffer)
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let kind: HTTPClientError.Kind = code == CURLE_OPERATION_TIMEDOUT ? .connectTimeout : .connection
        return HTTPClientError(kind: kind, message: message, curlCode: Int(code.rawValue))
    }

    static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }
}
