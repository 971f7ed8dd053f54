internal import CCurl
import Foundation
import Synchronization

/// One libcurl multi handle driven by one dedicated thread through the socket-action API and epoll.
///
/// libcurl tells the loop which sockets to watch (`CURLMOPT_SOCKETFUNCTION`, kept in an epoll set) and when to
/// time out (`CURLMOPT_TIMERFUNCTION`); the loop waits in `epoll_wait` and hands only the ready sockets to
/// `curl_multi_socket_action`, so a wake-up costs O(ready sockets) rather than O(all transfers).
///
/// Other threads only enqueue commands and write to an `eventfd` in the same epoll set (under the same lock
/// that guards the `running` flag, so a wake-up never writes to a closed descriptor). Every easy/multi call
/// happens on the loop thread.
final class CurlLoop: @unchecked Sendable {  // `multi` and `transfers` are confined to the loop thread
    enum Command {
        case add(Transfer)
        case cancel(Transfer)
        case resume(Transfer)
        case discard(Transfer, within: Duration)
        case push(Transfer, TransferSink)

        var isPush: Bool {
            if case .push = self { return true }
            return false
        }
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
    /// The epoll set holding curl's sockets and `wakeFD`; closed by the loop thread after `curl_multi_cleanup`.
    private let epollFD: Int32
    /// An eventfd written by `enqueue`/`stop`; closed by the loop thread once `running` is false.
    private let wakeFD: Int32
    /// When curl next wants `curl_multi_socket_action(CURL_SOCKET_TIMEOUT)`; nil: no timer. Loop thread only.
    private var timerDeadline: ContinuousClock.Instant?
    private static let watchdogInterval: Duration = .milliseconds(100)
    /// Transfers whose rest is being discarded (checked every watchdog tick; there are few). Loop thread only.
    private var discarding: [Transfer] = []
    /// When idle transfers were last looked for. A pass visits every transfer, so it runs every tenth of the idle
    /// timeout (100 ms to 1 s), not every tick: at thousands of streams the per-tick pass was a few percent of the
    /// service's CPU. A stall is thus reported at most a tenth of the timeout (at most 1 s) late. Loop thread only.
    private var lastStallScan = ContinuousClock.now
    private let stallScanInterval: Duration
    private static let maxEvents: Int32 = 1024

    init(options: Options) {
        CurlLoop.globalInit
        self.options = options
        stallScanInterval = min(max(options.idleTimeout / 10, Self.watchdogInterval), .seconds(1))
        multi = curl_multi_init()
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        precondition(epollFD >= 0 && wakeFD >= 0, "epoll_create1/eventfd failed: errno \(errno)")
        var wakeEvent = epoll_event()
        wakeEvent.events = EPOLLIN.rawValue
        wakeEvent.data.fd = wakeFD
        precondition(
            epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &wakeEvent) == 0, "epoll_ctl(eventfd) failed: errno \(errno)")
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, options.maxConnectionsPerHost)
        _ = ccurl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, options.maxConnectionCache)
        // The loop outlives the multi handle (it is cleaned up at the end of `run`), so unretained is safe.
        let loopPointer = Unmanaged.passUnretained(self).toOpaque()
        _ = ccurl_multi_setopt_socket_function(multi) { _, fd, what, user, _ in
            Unmanaged<CurlLoop>.fromOpaque(user!).takeUnretainedValue().watch(fd, what: what)
            return 0
        }
        _ = ccurl_multi_setopt_pointer(multi, CURLMOPT_SOCKETDATA, loopPointer)
        _ = ccurl_multi_setopt_timer_function(multi) { _, timeoutMs, user in
            let loop = Unmanaged<CurlLoop>.fromOpaque(user!).takeUnretainedValue()
            loop.timerDeadline = timeoutMs < 0 ? nil : .now + .milliseconds(timeoutMs)
            return 0
        }
        _ = ccurl_multi_setopt_pointer(multi, CURLMOPT_TIMERDATA, loopPointer)
        let thread = Thread { [self] in run() }
        thread.name = Self.threadName
        thread.start()
    }

    /// Bytes curl reads from a socket at a time, per transfer (`CURLOPT_BUFFERSIZE`; curl's default is 16 KB).
    static let receiveBufferSize = 4_096

    /// The loop thread's name.
    static let threadName = "curl-multi"

    /// Names the calling thread for the kernel (`perf`, `top -H`, gdb show it): Foundation's `Thread.name` does not.
    private static func nameCurrentThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = name.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, min($0.count - 1, 15)) }
    }

    private static let globalInit: Void = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT))
    }()

    /// Enqueues a command and wakes the loop. After shutdown, an `add` fails at once.
    func enqueue(_ command: Command) {
        let accepted = control.withLock { c -> Bool in
            // A sink is taken until the loop has exited (it then gets its transfer's end there), so only the loop
            // thread ever installs one.
            guard c.running, !c.stopping || command.isPush else { return false }
            c.commands.append(command)
            wake()
            return true
        }
        if !accepted {
            switch command {
            case .add(let t), .cancel(let t):
                t.finish(HTTPClientError(kind: .shutdown, message: "the HTTP client was shut down"))
            case .push(let t, let sink):
                _ = t.startPushing(sink)  // the loop has exited, ending the transfer: the sink gets that end
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
            wake()
            return true
        }
        if first {
            let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
            _ = exited.wait(timeout: .now() + .milliseconds(ms))
        }
    }

    /// Wakes the loop thread. Call only under `control`'s lock while `running` (the fd is closed afterwards).
    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)  // EAGAIN (counter saturated) still leaves the loop woken
    }

    // MARK: Loop thread

    /// `CURLMOPT_SOCKETFUNCTION`: mirrors curl's interest in `fd` into the epoll set.
    private func watch(_ fd: curl_socket_t, what: Int32) {
        if what == CURL_POLL_REMOVE {
            // Fails harmlessly (EBADF/ENOENT) if curl already closed the socket, which also drops it from the set.
            var unused = epoll_event()
            _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &unused)
            return
        }
        var event = epoll_event()
        event.events =
            (what & CURL_POLL_IN != 0 ? EPOLLIN.rawValue : 0) | (what & CURL_POLL_OUT != 0 ? EPOLLOUT.rawValue : 0)
        event.data.fd = fd
        // A descriptor number can be reused after a close, so do not trust our own bookkeeping: modify, else add.
        if epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event) != 0 && errno == ENOENT {
            _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event)
        }
    }

    private func run() {
        Self.nameCurrentThread(Self.threadName)
        var lastWatchdog = ContinuousClock.now
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: Int(Self.maxEvents))
        defer { events.deallocate() }
        var running: Int32 = 0
        while true {
            let (commands, stopping) = control.withLock { c in
                defer { c.commands.removeAll(keepingCapacity: true) }
                return (c.commands, c.stopping)
            }
            for command in commands { handle(command) }
            if stopping { break }

            // Wait for ready sockets, a command, curl's timer or the watchdog tick, whichever comes first; not at
            // all when a command was queued meanwhile (a pushed body's consumer queues one from this thread).
            var now = ContinuousClock.now
            var wait = max(.zero, lastWatchdog + Self.watchdogInterval - now)
            if let deadline = timerDeadline { wait = min(wait, max(.zero, deadline - now)) }
            if control.withLock({ !$0.commands.isEmpty }) { wait = .zero }
            let ready = epoll_wait(epollFD, events, Self.maxEvents, Int32(Self.millisecondsRoundingUp(wait)))
            for i in 0..<Int(max(0, ready)) {
                let fd = events[i].data.fd
                let flags = events[i].events
                if fd == wakeFD {
                    var count: UInt64 = 0
                    _ = read(wakeFD, &count, 8)
                    continue
                }
                var mask: Int32 = 0
                if flags & (EPOLLIN.rawValue | EPOLLHUP.rawValue) != 0 { mask |= CURL_CSELECT_IN }
                if flags & EPOLLOUT.rawValue != 0 { mask |= CURL_CSELECT_OUT }
                if flags & EPOLLERR.rawValue != 0 { mask |= CURL_CSELECT_ERR }
                curl_multi_socket_action(multi, fd, mask, &running)
            }
            // curl's timer: also how it asks to be driven right after add_handle and after an unpause (0 ms).
            if let deadline = timerDeadline, ContinuousClock.now >= deadline {
                timerDeadline = nil
                curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running)
            }
            collectCompleted()
            now = ContinuousClock.now
            if now - lastWatchdog >= Self.watchdogInterval {
                lastWatchdog = now
                checkStalls(now: now)
            }
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
        for case .push(let t, let sink) in pending { _ = t.startPushing(sink) }
        curl_multi_cleanup(multi)  // may still call the socket callback, so the epoll set is closed after it
        close(wakeFD)  // nobody writes to it any more: `running` is false under the lock
        close(epollFD)
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
            discarding.append(transfer)
            if transfer.curlPaused {
                transfer.markResumed()
                curl_easy_pause(easy, CURLPAUSE_CONT)
            }
        case .resume(let transfer):
            guard let easy = transfer.easy, transfers[easy] != nil else { return }
            transfer.markResumed()
            transfer.lastActivity = .now
            curl_easy_pause(easy, CURLPAUSE_CONT)
        case .push(let transfer, let sink):
            if transfer.startPushing(sink) { handle(.resume(transfer)) }
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
        // The receive buffer, allocated per transfer for its whole life: curl's 16 KB default was a sixth of a
        // stream's memory at 10,000 streams. A streamed event is a few hundred bytes; a larger body takes more reads.
        _ = ccurl_easy_setopt_long(easy, CURLOPT_BUFFERSIZE, Self.receiveBufferSize)
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
                _ = ccurl_easy_setopt_pointer(
                    easy, CURLOPT_COPYPOSTFIELDS,
                    UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!))
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
            remove(
                transfer,
                error: HTTPClientError(kind: .invalidRequest, message: String(cString: curl_multi_strerror(rc))))
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
        if !discarding.isEmpty {
            var expired: [Transfer] = []
            discarding.removeAll { transfer in
                guard let easy = transfer.easy, transfers[easy] === transfer else { return true }  // already gone
                guard let deadline = transfer.discardDeadline, now >= deadline else { return false }
                expired.append(transfer)
                return true
            }
            for transfer in expired {
                remove(transfer, error: HTTPClientError(kind: .cancelled, message: "the rest of the body was discarded"))
            }
        }
        let limit = options.idleTimeout
        guard now - lastStallScan >= stallScanInterval else { return }
        lastStallScan = now
        var stalled: [Transfer] = []
        for transfer in transfers.values where !transfer.curlPaused && now - transfer.lastActivity > limit {
            stalled.append(transfer)
        }
        for transfer in stalled {
            remove(transfer, error: HTTPClientError(kind: .stalled, message: "no bytes received for \(limit)"))
        }
    }

    private static func error(for code: CURLcode, transfer: Transfer) -> HTTPClientError {
        let detail = String(cString: transfer.errorBuffer)
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let kind: HTTPClientError.Kind = code == CURLE_OPERATION_TIMEDOUT ? .connectTimeout : .connection
        return HTTPClientError(kind: kind, message: message, curlCode: Int(code.rawValue))
    }

    static func millisecondsRoundingUp(_ d: Duration) -> Int {
        let ms = milliseconds(d)
        return Duration.milliseconds(ms) < d ? ms + 1 : ms
    }

    static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }
}
