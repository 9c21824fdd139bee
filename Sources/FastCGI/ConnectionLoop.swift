import CLinux
import Dispatch
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// One event loop's connections: accepts, reads, runs handlers and writes responses for them.
///
/// Everything here runs on the loop's thread: socket events arrive there, and the handler tasks
/// it starts prefer the loop as their executor, so they resume there too.
final class ConnectionLoop: @unchecked Sendable {
    // @unchecked: all mutable state is touched only on `loop`'s thread.

    private enum Phase {
        /// The request is being read.
        case reading
        /// The handler is running; a hang-up cancels it.
        case handling
        /// The response is being written.
        case writing
        /// Kept open by nginx between requests; readable means the next request.
        case idle
    }

    /// A class, changed in place: changing a field of a struct through the dictionary
    /// (`entries[token]?.phase = …`) allocated a coroutine frame each time, five times a request.
    private final class Entry {
        let connection: FastCGIConnection
        var phase: Phase
        var task: Task<Void, Never>?
        /// Set when the connection reported a hang-up (or stray input) while its request was
        /// handled: it no longer reports events, and it closes once the handler ends.
        var silenced = false

        init(connection: FastCGIConnection, phase: Phase) {
            self.connection = connection
            self.phase = phase
        }
    }

    /// What a connection is registered for, once, from accept to close: readable (the next
    /// request, or nginx closing) and peer hang-up. Level-triggered and never re-armed, so a
    /// request costs no `epoll_ctl`: between the read and the next request nothing is readable
    /// (nginx sends a request only after the previous answer), so it reports nothing unless nginx
    /// hangs up — which is what the handling phase listens for.
    private static let connectionEvents = EPOLLIN.rawValue | EPOLLRDHUP.rawValue

    private static let listenerToken: UInt64 = 1
    /// How long one blocking read or write may wait on a peer before the connection is dropped.
    private static let socketTimeoutSeconds = 10

    private let shared: FastCGIServer.Shared
    private let loop: EventLoop
    private var entries: [UInt64: Entry] = [:]
    private var nextToken: UInt64 = 2
    private var listening = false

    init(shared: FastCGIServer.Shared) throws(FastCGIServerError) {
        self.shared = shared
        loop = try EventLoop()
    }

    func start(name: String) {
        loop.start(name: name, whenIdle: shared.configuration.whenIdle) { [unowned self] token, events in
            handle(token: token, events: events)
        }
        loop.execute { self.armListener() }
    }

    /// Runs `body` on the loop thread.
    func execute(_ body: @escaping @Sendable () -> Void) {
        loop.execute(body)
    }

    /// Stops the thread and closes every connection.
    func stop() {
        loop.stop()
        entries = [:]  // the thread is gone: dropping the entries closes their descriptors
    }

    // MARK: On the loop thread

    func armListener() {
        guard !listening, shared.accepting.load(ordering: .acquiring) else { return }
        listening = true
        // EPOLLEXCLUSIVE: a new connection wakes one loop, not all of them.
        loop.epoll.add(shared.listener, events: EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue, token: Self.listenerToken)
    }

    func disarmListener() {
        guard listening else { return }
        listening = false
        loop.epoll.remove(shared.listener)
    }

    func cancelHandlers() {
        for entry in entries.values where entry.phase == .handling { entry.task?.cancel() }
    }

    private func handle(token: UInt64, events: UInt32) {
        if token == Self.listenerToken {
            acceptConnections()
            return
        }
        guard let entry = entries[token] else { return }  // closed earlier in the same batch of events
        switch entry.phase {
        case .idle:
            // The next request on a kept connection, or nginx closing it.
            entry.phase = .reading
            shared.activeRequests.add(1, ordering: .relaxed)
            readRequest(token, entry)
        case .handling:
            // nginx closes the connection when its client goes away (it sends nothing else while
            // a request is handled). The hang-up stays readable, and epoll reports a hang-up
            // whatever a registration asks for: unregister, once.
            entry.task?.cancel()
            guard !entry.silenced else { return }
            entry.silenced = true
            loop.epoll.remove(entry.connection.fileDescriptor)
        case .reading, .writing:
            break
        }
    }

    private func acceptConnections() {
        // Up to 64 per wake-up: a burst must leave the backlog fast (a full backlog makes nginx
        // answer 502), yet other loops still get their share.
        for _ in 0..<64 {
            guard shared.accepting.load(ordering: .acquiring) else {
                disarmListener()
                return
            }
            guard shared.connections.load(ordering: .relaxed) < shared.configuration.maximumConnections else {
                pauseListening()
                return
            }
            let fd = fanout_accept(shared.listener)
            if fd < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK, EINTR: return
                case ECONNABORTED, EPROTO: continue
                default:
                    // Out of descriptors, most likely: wait for a connection to close.
                    shared.logger.error("accept failed", metadata: ["errno": "\(errno)"])
                    pauseListening()
                    return
                }
            }
            Self.setTimeouts(fd)
            shared.connections.add(1, ordering: .relaxed)
            shared.activeRequests.add(1, ordering: .relaxed)
            let token = nextToken
            nextToken += 1
            let entry = Entry(connection: FastCGIConnection(fileDescriptor: fd), phase: .reading)
            entries[token] = entry
            loop.epoll.add(fd, events: Self.connectionEvents, token: token)
            readRequest(token, entry)
        }
    }

    private func pauseListening() {
        disarmListener()
        shared.listenerPaused.store(true, ordering: .relaxed)
        // A connection may have closed between the check and the flag: look again.
        if shared.connections.load(ordering: .relaxed) < shared.configuration.maximumConnections,
            shared.listenerPaused.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged
        {
            armListener()
        }
    }

    private func readRequest(_ token: UInt64, _ entry: Entry) {
        switch entry.connection.readRequest(maximumBodyBytes: shared.configuration.maximumBodyBytes) {
        case .closed:
            remove(token)
        case .request(let parameters, let body, let bodyTooLarge):
            let request = FastCGIRequest(
                parameters: parameters, body: body, bodyTooLarge: bodyTooLarge, receivedAt: .now)
            entry.phase = .handling
            switch shared.handler.answer(request) {
            case .response(let response) where response.stream == nil:
                write(token, entry, response)
            case .response(let response):
                // A streamed body is written from a task, like any work that waits.
                startTask(token, entry) { response }
            case .task(let work):
                startTask(token, entry, work)
            }
        }
    }

    /// Runs `work` in a task that prefers this loop, then writes its response.
    private func startTask(_ token: UInt64, _ entry: Entry, _ work: @escaping @Sendable () async -> FastCGIResponse) {
        // The task's first job is queued on this loop and runs after this event is handled,
        // so its handle is stored before it can finish.
        entry.task = Task(executorPreference: loop) {
            let response = await work()
            if let stream = response.stream {
                await self.stream(token, head: response.head(), stream)
            } else {
                self.finish(token, response)
            }
        }
    }

    /// Writes the response; called at the end of the handler's task.
    private func finish(_ token: UInt64, _ response: FastCGIResponse) {
        guard loop.isCurrent else {
            // The handler ended somewhere else (an actor, say): write from the loop.
            loop.execute { self.finish(token, response) }
            return
        }
        guard let entry = entries[token] else { return }
        write(token, entry, response)
    }

    private func write(_ token: UInt64, _ entry: Entry, _ response: FastCGIResponse) {
        entry.phase = .writing
        entry.task = nil
        completed(token, entry, keptOpen: entry.connection.respond(head: response.head(), body: response.body))
    }

    /// Writes a streamed response: the head, then whatever `body` writes, each piece flushed.
    ///
    /// The writes block on the socket as long as nginx does not read (a slow client, with
    /// buffering off): they run on a serial queue of their own, not on the loop, so one slow
    /// client never holds up the loop's other connections. Meanwhile the loop leaves the
    /// connection alone; the request stays in the handling phase, so a hang-up still cancels the
    /// task. `body` runs even when the head cannot be written, with writes that fail, so that
    /// whatever it holds (a batch slot) is released the usual way.
    private func stream(_ token: UInt64, head: [UInt8], _ body: FastCGIResponse.Stream) async {
        let connection = await onLoop { self.entries[token]?.connection }
        let writer = StreamWriter(connection)
        _ = await writer.write(head, first: true)
        await body(
            FastCGIResponseWriter { bytes in
                let written = await writer.write(bytes, first: false)
                // The client is gone: stop the work that was writing to it.
                if !written { withUnsafeCurrentTask { $0?.cancel() } }
                return written
            })
        let healthy = writer.isHealthy
        await onLoop {
            guard let entry = self.entries[token] else { return }
            entry.phase = .writing
            entry.task = nil
            self.completed(token, entry, keptOpen: entry.connection.endStream(healthy: healthy))
        }
    }

    /// Runs `body` on the loop thread: at once when already there, as the handler's task
    /// usually is.
    private func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        if loop.isCurrent { return body() }
        return await withCheckedContinuation { continuation in
            loop.execute { continuation.resume(returning: body()) }
        }
    }

    /// Ends a request's bookkeeping once its response is written.
    private func completed(_ token: UInt64, _ entry: Entry, keptOpen: Bool) {
        if keptOpen, !entry.silenced {
            entry.phase = .idle
            shared.activeRequests.subtract(1, ordering: .relaxed)
        } else {
            remove(token)
        }
    }

    private func remove(_ token: UInt64) {
        guard let entry = entries.removeValue(forKey: token) else { return }
        if entry.phase != .idle { shared.activeRequests.subtract(1, ordering: .relaxed) }
        let fd = entry.connection.fileDescriptor
        // Unregister before the descriptor closes (when `entry` is released just below).
        if fd >= 0, !entry.silenced { loop.epoll.remove(fd) }
        shared.connectionClosed()
    }

    private static func setTimeouts(_ fd: Int32) {
        var timeout = timeval(tv_sec: socketTimeoutSeconds, tv_usec: 0)
        let size = socklen_t(MemoryLayout<timeval>.size)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, size)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, size)
    }
}

/// Writes one streamed response body, piece by piece, on a serial queue of its own.
///
/// It has the connection to itself while the stream lasts (the loop does not touch a connection
/// whose request is being handled), and runs one write at a time: the producer awaits each.
private final class StreamWriter: Sendable {
    private let connection: FastCGIConnection?
    private let queue = DispatchQueue(label: "fanout.stream-writer")
    /// False once a write failed: later writes are skipped.
    private let healthy = NIOLockedValueBox(true)

    init(_ connection: FastCGIConnection?) {
        self.connection = connection
    }

    var isHealthy: Bool { healthy.withLockedValue { $0 } && connection != nil }

    func write(_ bytes: [UInt8], first: Bool) async -> Bool {
        guard let connection, isHealthy else { return false }
        return await withCheckedContinuation { continuation in
            queue.async {
                let written = first ? connection.beginStream(head: bytes) : connection.writeStreamed(bytes)
                if !written { self.healthy.withLockedValue { $0 = false } }
                continuation.resume(returning: written)
            }
        }
    }
}
