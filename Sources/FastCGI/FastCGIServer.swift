import CLinux
import Logging
import NIOConcurrencyHelpers
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A FastCGI responder: accepts connections from nginx, reads requests with libfcgi, hands them
/// to a ``FastCGIHandler`` and writes the responses back.
///
/// Threads: a few event loops of our own (``Configuration/ioThreads``), each with its own epoll
/// instance. Each loop accepts connections from the shared listening socket, reads their
/// requests, asks the handler for an answer (a response at once, or work it runs in a task with
/// itself as the executor), and writes the response, all on one thread: no hand-offs and no
/// shared connection table. While a task runs, its loop watches the connection and cancels the
/// task if nginx closes it; between requests a kept connection costs only its epoll
/// registration. libfcgi's blocking calls therefore run only on
/// these threads, never on Swift's cooperative pool; socket timeouts bound how long a
/// misbehaving peer can hold one.
public final class FastCGIServer: Sendable {
    private let shared: Shared
    private let listener: ListeningSocket
    private let loops: [ConnectionLoop]

    /// Calls `FCGX_Init` and makes broken pipes an error instead of a signal.
    ///
    /// Call once, from `main`, before any thread starts.
    public static func initializeLibrary() {
        FastCGILibrary.initialize()
    }

    /// Opens the listening socket and creates the event loops; nothing is accepted before
    /// ``start()``.
    ///
    /// - Throws: ``FastCGIServerError`` when there is no usable listening socket.
    public init(configuration: Configuration, handler: some FastCGIHandler, logger: Logger) throws {
        guard configuration.ioThreads >= 1, (1...1_000_000).contains(configuration.maximumConnections) else {
            throw FastCGIServerError.invalidConfiguration(
                "ioThreads must be at least 1 and maximumConnections between 1 and 1000000")
        }
        let listener = try ListeningSocket(
            fallback: configuration.listener, allowNonLoopback: configuration.allowNonLoopback,
            backlog: configuration.backlog)
        let shared = Shared(
            configuration: configuration, handler: handler, logger: logger, listener: listener.descriptor)
        self.listener = listener
        self.shared = shared
        loops = try (0..<configuration.ioThreads).map { _ in try ConnectionLoop(shared: shared) }
        shared.setLoops(loops)
    }

    /// Where the server listens, for logs.
    public var listenerDescription: String { listener.description }

    /// Starts accepting connections.
    public func start() {
        shared.accepting.store(true, ordering: .releasing)
        for (index, loop) in loops.enumerated() { loop.start(name: "fcgi-loop-\(index)") }
    }

    /// Requests being read, handled or written (connections idle between requests not counted).
    public var activeRequestCount: Int { shared.activeRequests.load(ordering: .relaxed) }

    /// Cancels the handler task of every request in flight.
    public func cancelInFlight() {
        for loop in loops { loop.execute { loop.cancelHandlers() } }
    }

    /// Connections open now, idle ones included.
    public var connectionCount: Int { shared.connections.load(ordering: .relaxed) }

    /// Stops accepting new connections; those open go on being served.
    private func stopAccepting() {
        shared.accepting.store(false, ordering: .releasing)
        for loop in loops { loop.execute { loop.disarmListener() } }
    }

    /// Stops accepting, waits up to `timeout` for requests in flight to be answered, then closes
    /// every connection and stops all threads.
    public func shutdown(timeout: Duration) async {
        stopAccepting()
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while activeRequestCount > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if activeRequestCount > 0 {
            shared.logger.warning(
                "closing connections with requests still in flight", metadata: ["count": "\(activeRequestCount)"])
        }
        // Joining the loop threads blocks: on a thread of its own, not Swift's pool.
        let loops = loops
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            EventLoop.detach(name: "fcgi-stop") {
                for loop in loops { loop.stop() }
                done.resume()
            }
        }
        shared.setLoops([])
    }
}

extension FastCGIServer {
    /// What every loop reads, and the counters they share.
    final class Shared: Sendable {
        let configuration: Configuration
        let handler: any FastCGIHandler
        let logger: Logger
        let listener: Int32
        let accepting = Atomic(false)
        let connections = Atomic(0)
        let activeRequests = Atomic(0)
        /// Set when a loop stopped listening because the connection limit was reached.
        let listenerPaused = Atomic(false)
        private let loops = NIOLockedValueBox<[ConnectionLoop]>([])

        init(configuration: Configuration, handler: any FastCGIHandler, logger: Logger, listener: Int32) {
            self.configuration = configuration
            self.handler = handler
            self.logger = logger
            self.listener = listener
        }

        func setLoops(_ loops: [ConnectionLoop]) {
            self.loops.withLockedValue { $0 = loops }
        }

        /// Called when a connection closes: lets paused loops listen again once under the limit.
        func connectionClosed() {
            let remaining = connections.subtract(1, ordering: .relaxed).newValue
            guard remaining < configuration.maximumConnections,
                listenerPaused.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged
            else { return }
            for loop in loops.withLockedValue({ $0 }) { loop.execute { loop.armListener() } }
        }
    }
}
