import CLinux
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A FastCGI responder: accepts connections from nginx, reads requests with libfcgi, hands them
/// to a ``FastCGIHandler`` and writes the responses back.
///
/// Threads: one poller thread waits in `epoll` for new connections, for the next request on
/// kept-alive connections, and for connections that close while their request is being handled
/// (which cancels the handler's task). A fixed pool of I/O threads does libfcgi's blocking reads,
/// writes and closes. Handlers run on Swift's concurrency pool and never touch a socket. So a slow
/// request holds no thread, and a connection kept open by nginx holds nothing but its entry.
public final class FastCGIServer: Sendable {
    private enum Phase {
        /// An I/O thread is reading the request.
        case reading
        /// The handler is running; the poller watches for the connection closing.
        case handling
        /// An I/O thread is writing the response.
        case writing
        /// Kept open by nginx between requests; the poller watches for the next one.
        case idle
    }

    private struct Entry {
        let connection: FastCGIConnection
        var phase: Phase
        var task: Task<Void, Never>?
        var cancelRequested = false
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextToken: UInt64 = 2
        var listenerArmed = false
        var accepting = false
        var stopped = false
        var busy = 0
        var poller: pthread_t?
    }

    private static let listenerToken: UInt64 = 1

    private let configuration: Configuration
    private let handler: any FastCGIHandler
    private let logger: Logger
    private let listener: ListeningSocket
    private let epoll: Epoll
    private let workers: WorkerThreads
    private let state = Mutex(State())

    /// Calls `FCGX_Init` and makes broken pipes an error instead of a signal.
    ///
    /// Call once, from `main`, before any thread starts.
    public static func initializeLibrary() {
        FastCGILibrary.initialize()
    }

    /// Opens the listening socket and starts the I/O threads.
    ///
    /// - Throws: ``FastCGIServerError`` when there is no usable listening socket.
    public init(configuration: Configuration, handler: some FastCGIHandler, logger: Logger) throws {
        guard configuration.ioThreads >= 1, (1...1000).contains(configuration.maximumConnections) else {
            throw FastCGIServerError.invalidConfiguration(
                "ioThreads must be at least 1 and maximumConnections between 1 and 1000")
        }
        self.configuration = configuration
        self.handler = handler
        self.logger = logger
        listener = try ListeningSocket(
            fallback: configuration.listener, allowNonLoopback: configuration.allowNonLoopback,
            backlog: configuration.backlog)
        epoll = try Epoll()
        workers = WorkerThreads(count: configuration.ioThreads, name: "fcgi-io")
    }

    /// Where the server listens, for logs.
    public var listenerDescription: String { listener.description }

    /// Starts accepting connections.
    public func start() {
        state.withLock {
            $0.accepting = true
            $0.listenerArmed = true
        }
        epoll.add(listener.descriptor, events: EPOLLIN.rawValue, token: Self.listenerToken)
        let thread = WorkerThreads.spawn(name: "fcgi-poller") { [self] in pollLoop() }
        state.withLock { $0.poller = thread }
    }

    /// Requests being read, handled or written (connections idle between requests not counted).
    public var activeRequestCount: Int { state.withLock { $0.busy } }

    /// Cancels the handler task of every request in flight.
    public func cancelInFlight() {
        let tasks = state.withLock { state in
            state.entries.values.compactMap { $0.phase == .handling ? $0.task : nil }
        }
        for task in tasks { task.cancel() }
    }

    /// Stops accepting, waits up to `timeout` for requests in flight to be answered, then closes
    /// every connection and stops all threads. Blocks the calling thread.
    public func shutdown(timeout: Duration) {
        state.withLock {
            $0.accepting = false
            $0.listenerArmed = false
        }
        epoll.remove(listener.descriptor)
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while activeRequestCount > 0, clock.now < deadline {
            usleep(10_000)
        }
        let poller = state.withLock { state -> pthread_t? in
            state.stopped = true
            return state.poller
        }
        epoll.wake()
        if let poller { pthread_join(poller, nil) }
        workers.stop()
        let remaining = state.withLock { state -> [UInt64: Entry] in
            defer { state.entries = [:] }
            return state.entries
        }
        if remaining.values.contains(where: { $0.phase != .idle }) {
            logger.warning(
                "closing connections with requests still in flight", metadata: ["count": "\(remaining.count)"])
        }
        // Dropping the entries closes their descriptors.
    }

    // MARK: Poller thread

    private func pollLoop() {
        let events = UnsafeMutableBufferPointer<epoll_event>.allocate(capacity: 256)
        defer { events.deallocate() }
        while true {
            let count = epoll.wait(into: events, timeoutMilliseconds: -1)
            for index in 0..<count {
                let token = events[index].data.u64
                switch token {
                case Epoll.wakeToken:
                    epoll.drainWake()
                    if state.withLock({ $0.stopped }) { return }
                case Self.listenerToken:
                    acceptConnections()
                default:
                    connectionBecameReady(token)
                }
            }
        }
    }

    private func acceptConnections() {
        // Bounded so that a flood of connections cannot starve the other events.
        for _ in 0..<64 {
            let mayAccept = state.withLock { state -> Bool in
                guard state.accepting else { return false }
                if state.entries.count >= configuration.maximumConnections {
                    state.listenerArmed = false
                    return false
                }
                return true
            }
            guard mayAccept else {
                if !state.withLock({ $0.listenerArmed }) {
                    epoll.modify(listener.descriptor, events: 0, token: Self.listenerToken)
                }
                return
            }
            let fd = fanout_accept(listener.descriptor)
            if fd < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK, EINTR: return
                case ECONNABORTED, EPROTO: continue
                default:
                    // Out of descriptors, most likely: back off briefly instead of spinning.
                    logger.error("accept failed", metadata: ["errno": "\(errno)"])
                    usleep(10_000)
                    return
                }
            }
            let connection = FastCGIConnection(fileDescriptor: fd)
            let token = state.withLock { state -> UInt64 in
                let token = state.nextToken
                state.nextToken += 1
                state.entries[token] = Entry(connection: connection, phase: .reading)
                state.busy += 1
                return token
            }
            workers.submit { self.readRequest(token) }
        }
    }

    private func connectionBecameReady(_ token: UInt64) {
        enum Action {
            case read(Int32)
            case cancel(Task<Void, Never>?)
        }
        let action = state.withLock { state -> Action? in
            guard var entry = state.entries[token] else { return nil }  // a stale event
            defer { state.entries[token] = entry }
            switch entry.phase {
            case .idle:
                entry.phase = .reading
                state.busy += 1
                return .read(entry.connection.fileDescriptor)
            case .handling:
                // nginx closes the connection when its client goes away.
                entry.cancelRequested = true
                return .cancel(entry.task)
            case .reading, .writing:
                return nil
            }
        }
        switch action {
        case .read(let fd):
            epoll.remove(fd)
            workers.submit { self.readRequest(token) }
        case .cancel(let task):
            task?.cancel()
        case nil:
            break
        }
    }

    // MARK: I/O threads

    private func readRequest(_ token: UInt64) {
        guard let connection = state.withLock({ $0.entries[token]?.connection }) else { return }
        switch connection.readRequest(maximumBodyBytes: configuration.maximumBodyBytes) {
        case .closed:
            removeEntry(token)
        case .request(let parameters, let body, let bodyTooLarge):
            let request = FastCGIRequest(
                parameters: parameters, body: body, bodyTooLarge: bodyTooLarge, receivedAt: .now)
            state.withLock { $0.entries[token]?.phase = .handling }
            epoll.add(
                connection.fileDescriptor, events: EPOLLRDHUP.rawValue | EPOLLONESHOT.rawValue, token: token)
            let handler = handler
            let task = Task {
                let response = await handler.handle(request)
                self.complete(token, response)
            }
            state.withLock { state in
                guard state.entries[token]?.phase == .handling else { return }
                state.entries[token]?.task = task
                if state.entries[token]?.cancelRequested == true { task.cancel() }
            }
        }
    }

    /// Called on the concurrency pool when the handler is done: hands the writing to an I/O thread.
    private func complete(_ token: UInt64, _ response: FastCGIResponse) {
        guard
            let connection = state.withLock({ state -> FastCGIConnection? in
                state.entries[token]?.phase = .writing
                state.entries[token]?.task = nil
                return state.entries[token]?.connection
            })
        else { return }
        // Stop watching before an I/O thread may close the descriptor and the number is reused.
        epoll.remove(connection.fileDescriptor)
        workers.submit { self.writeResponse(token, connection, response) }
    }

    private func writeResponse(_ token: UInt64, _ connection: FastCGIConnection, _ response: FastCGIResponse) {
        let keptOpen = connection.respond(head: response.head(), body: response.body)
        let rearm = state.withLock { state -> Bool in
            guard keptOpen, !state.stopped, state.entries[token] != nil else { return false }
            state.entries[token]?.phase = .idle
            state.busy -= 1
            return true
        }
        if rearm {
            epoll.add(
                connection.fileDescriptor, events: EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLONESHOT.rawValue,
                token: token)
        } else {
            removeEntry(token)
        }
    }

    private func removeEntry(_ token: UInt64) {
        let (removed, rearmListener) = state.withLock { state -> (Entry?, Bool) in
            guard let entry = state.entries.removeValue(forKey: token) else { return (nil, false) }
            if entry.phase != .idle { state.busy -= 1 }
            if state.accepting, !state.listenerArmed, state.entries.count < configuration.maximumConnections {
                state.listenerArmed = true
                return (entry, true)
            }
            return (entry, false)
        }
        if rearmListener { epoll.modify(listener.descriptor, events: EPOLLIN.rawValue, token: Self.listenerToken) }
        _ = removed  // released here, outside the lock: its deinit closes the descriptor
    }
}
