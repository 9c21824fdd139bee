import Dispatch
import FanoutEngine
import FanoutHTTP
import FanoutJobs
import FastCGI
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// The whole responder: the FastCGI transport serving the Fanout service, with graceful shutdown.
public final class FanoutApplication: Sendable {
    /// Everything that can be configured. Every field has a default.
    public struct Configuration: Sendable {
        /// The transport: listener, threads, connection and body limits.
        public var transport = FastCGIServer.Configuration()
        /// The service: batch limits and load shedding.
        public var service = FanoutService.Configuration()
        /// How long in-flight batches may run on after a shutdown signal before they are cancelled.
        public var shutdownGrace: Duration = .seconds(30)
        /// Where asynchronous jobs are stored (SQLite), shared by every responder using the same
        /// directory; `nil` disables asynchronous jobs.
        public var dataDirectory: String? = ".run/data"
        /// Where asynchronous jobs are stored when shared by several hosts: a PostgreSQL database.
        /// Takes precedence over `dataDirectory`.
        public var databaseURL: DatabaseURL?
        /// The most connections this responder opens to that database (two of them held, for its
        /// liveness lock and for notifications).
        public var databaseConnections = 10
        /// Asynchronous job limits and timings.
        public var jobs = JobManager.Configuration()
        /// The APIs `http` tasks may call; none by default.
        public var upstreams: [Upstream] = []

        /// The default configuration.
        public init() {}
    }

    private let configuration: Configuration
    private let service: FanoutService
    private let server: FastCGIServer
    private let upstreamClient: UpstreamClient
    private let logger: Logger

    /// Opens the listening socket; nothing is accepted before ``start()``.
    ///
    /// - Throws: ``FastCGIServerError`` when there is no usable listening socket, or the error
    ///   opening the job store.
    public init(configuration: Configuration, registry: OperationRegistry? = nil, logger: Logger) throws {
        var configuration = configuration
        // The transport discards bodies past the service's limit: one number for both.
        configuration.transport.maximumBodyBytes = configuration.service.maximumBodyBytes
        self.configuration = configuration
        self.logger = logger
        let store: (any JobStore)?
        if let url = configuration.databaseURL {
            store = try Self.openPostgres(url, connections: configuration.databaseConnections, logger: logger)
        } else {
            store = try configuration.dataDirectory.map { try SQLiteJobStore(directory: $0) }
        }
        // One client for every `http` task, on event loops of its own.
        upstreamClient = UpstreamClient(upstreams: configuration.upstreams)
        var registry = registry ?? .builtIns(limits: configuration.service.limits)
        registry.register(HTTPOperation(client: upstreamClient))
        service = FanoutService(
            configuration: configuration.service, registry: registry, logger: logger,
            jobs: store.map { ($0, configuration.jobs) })
        server = try FastCGIServer(configuration: configuration.transport, handler: service, logger: logger)
    }

    /// Connects to PostgreSQL and migrates its schema, from this synchronous start-up.
    private static func openPostgres(_ url: DatabaseURL, connections: Int, logger: Logger) throws -> PostgresJobStore {
        let opened = NIOLockedValueBox<Result<PostgresJobStore, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                let store = try await PostgresJobStore(url: url, maximumConnections: connections, logger: logger)
                opened.withLockedValue { $0 = .success(store) }
            } catch {
                opened.withLockedValue { $0 = .failure(error) }
            }
            done.signal()
        }
        // The main thread, not one of Swift's pool: waiting here blocks no task.
        done.wait()
        return try opened.withLockedValue { $0! }.get()
    }

    /// Starts serving.
    public func start() {
        server.start()
        service.jobs?.start()
        logger.notice(
            "listening",
            metadata: [
                "socket": "\(server.listenerDescription)",
                "jobs": "\(service.jobs.map { $0.store.location } ?? "disabled")",
                "upstreams": "\(upstreamClient.upstreamNames.joined(separator: ","))",
            ])
    }

    /// Drains and stops; blocks the calling thread until done.
    ///
    /// New batches are refused (503) and `/healthz` answers 503 while running batches get up to
    /// `shutdownGrace` to finish. Batches still running then are cancelled (their unfinished tasks
    /// report `shutdown`) and answered; then every connection is closed.
    public func shutdown() {
        // Jobs stop being claimed now; running ones get the same grace as batches, in parallel.
        // Queued jobs stay queued for the next responder.
        var jobsStopped: DispatchSemaphore?
        if let jobs = service.jobs {
            let done = DispatchSemaphore(value: 0)
            let grace = configuration.shutdownGrace
            Task {
                await jobs.shutdown(grace: grace)
                await jobs.store.close()
                done.signal()
            }
            jobsStopped = done
        }
        service.beginDraining()
        logger.notice("draining", metadata: ["batches_in_flight": "\(service.batchesInFlight)"])
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.shutdownGrace
        while service.batchesInFlight > 0, clock.now < deadline {
            usleep(10_000)
        }
        if service.batchesInFlight > 0 {
            logger.warning("grace period over; cancelling batches", metadata: ["count": "\(service.batchesInFlight)"])
            service.markShuttingDown()
            server.cancelInFlight()
        }
        server.shutdown(timeout: .seconds(5))
        jobsStopped?.wait()
        // Last: no batch or job is left to make calls.
        let clientStopped = DispatchSemaphore(value: 0)
        let upstreamClient = upstreamClient
        Task {
            await upstreamClient.shutdown()
            clientStopped.signal()
        }
        clientStopped.wait()
        logger.notice("stopped")
    }
}
