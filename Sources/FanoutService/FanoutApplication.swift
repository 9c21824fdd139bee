import FanoutEngine
import FanoutHTTP
import FanoutJobs
import FastCGI
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import UnixSignals

/// The whole responder: the FastCGI transport serving the Fanout service, the job manager and the
/// upstream HTTP client, run as services of one swift-service-lifecycle `ServiceGroup`.
///
/// SIGTERM or SIGINT starts a graceful shutdown, which the group passes to the services in the
/// reverse of their start order: the transport first (new batches get 503, `/healthz` 503,
/// running batches finish), then the job manager (no more claims, running jobs finish), then the
/// upstream client (its connections closed once nothing can call). The grace period bounds the
/// whole of it; past it the group cancels what is still running (batches answer with their
/// unfinished tasks `shutdown`, jobs end `interrupted`), and cancellation itself is bounded too.
public final class FanoutApplication: Sendable {
    /// Everything that can be configured. Every field has a default.
    public struct Configuration: Sendable {
        /// The transport: listener, threads, connection and body limits.
        public var transport = FastCGIServer.Configuration()
        /// The service: batch limits and load shedding.
        public var service = FanoutService.Configuration()
        /// How long in-flight batches and jobs may run on after a shutdown signal before they are
        /// cancelled.
        public var shutdownGrace: Duration = .seconds(30)
        /// How long cancelled work may take to stop before the process gives up on it.
        public var cancellationGrace: Duration = .seconds(10)
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

    /// Opens the listening socket and the job store; nothing is accepted before ``run()``.
    ///
    /// - Throws: ``FastCGIServerError`` when there is no usable listening socket, or the error
    ///   opening the job store.
    public init(configuration: Configuration, registry: OperationRegistry? = nil, logger: Logger) async throws {
        var configuration = configuration
        // The transport discards bodies past the service's limit: one number for both.
        configuration.transport.maximumBodyBytes = configuration.service.maximumBodyBytes
        self.configuration = configuration
        self.logger = logger
        let store: (any JobStore)?
        if let url = configuration.databaseURL {
            store = try await PostgresJobStore(
                url: url, maximumConnections: configuration.databaseConnections, logger: logger)
        } else {
            store = try configuration.dataDirectory.map { try SQLiteJobStore(directory: $0) }
        }
        let metrics = ServiceMetrics()
        // One client for every `http` task, on event loops of its own.
        upstreamClient = UpstreamClient(upstreams: configuration.upstreams, metricsFactory: metrics.factory)
        var registry = registry ?? .builtIns(limits: configuration.service.limits)
        registry.register(HTTPOperation(client: upstreamClient))
        service = FanoutService(
            configuration: configuration.service, registry: registry, logger: logger,
            jobs: store.map { ($0, configuration.jobs) }, metrics: metrics)
        let server = try FastCGIServer(configuration: configuration.transport, handler: service, logger: logger)
        self.server = server
        metrics.setTransportProbe { (server.activeRequestCount, server.connectionCount) }
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully; returns when everything stopped.
    public func run() async throws {
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: UpstreamClientService(client: upstreamClient))
        ]
        if let jobs = service.jobs {
            services.append(.init(service: JobManagerService(jobs: jobs, grace: configuration.shutdownGrace)))
        }
        services.append(
            .init(
                service: FastCGIService(
                    server: server, service: service, upstreams: upstreamClient.upstreamNames, logger: logger)))
        var group = ServiceGroupConfiguration(services: services, logger: logger)
        group.gracefulShutdownSignals = [.sigterm, .sigint]
        group.maximumGracefulShutdownDuration = configuration.shutdownGrace
        group.maximumCancellationDuration = configuration.cancellationGrace
        try await ServiceGroup(configuration: group).run()
        logger.notice("stopped")
    }
}

/// The transport and the HTTP service: serves until graceful shutdown, then drains.
struct FastCGIService: Service {
    let server: FastCGIServer
    let service: FanoutService
    let upstreams: [String]
    let logger: Logger

    func run() async throws {
        server.start()
        logger.notice(
            "listening",
            metadata: [
                "socket": "\(server.listenerDescription)",
                "jobs": "\(service.jobs.map { $0.store.location } ?? "disabled")",
                "upstreams": "\(upstreams.joined(separator: ","))",
            ])
        // Serving happens on the transport's own threads; this task only waits.
        try? await gracefulShutdown()
        service.beginDraining()
        logger.notice("draining", metadata: ["batches_in_flight": "\(service.batchesInFlight)"])
        // Drains until no batch runs, or until the group's grace is over and it cancels this task.
        while service.batchesInFlight > 0, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if service.batchesInFlight > 0 {
            logger.warning("grace period over; cancelling batches", metadata: ["count": "\(service.batchesInFlight)"])
            service.markShuttingDown()
            server.cancelInFlight()
        }
        // Answers to cancelled batches take moments; then every connection closes. In a task of
        // its own, which the group's cancellation does not reach: its waits must stay waits.
        let server = server
        await Task { await server.shutdown(timeout: .seconds(5)) }.value
    }
}

/// The job manager: claims and runs jobs until graceful shutdown, then lets running jobs finish
/// within the grace (queued ones stay queued for the next responder).
struct JobManagerService: Service {
    let jobs: JobManager
    let grace: Duration

    func run() async throws {
        jobs.start()
        try? await gracefulShutdown()
        // In a task of its own, whose short waits cancellation does not cut into a busy loop; the
        // group cancelling this one (its grace is over) ends the jobs' grace.
        let jobs = jobs
        let shutdown = Task { [grace] in
            await jobs.shutdown(grace: grace)
            await jobs.store.close()
        }
        await withTaskCancellationHandler {
            await shutdown.value
        } onCancel: {
            jobs.endGrace()
        }
    }
}

/// The upstream HTTP client: closed last, when no batch or job can make a call.
struct UpstreamClientService: Service {
    let client: UpstreamClient

    func run() async throws {
        try? await gracefulShutdown()
        await client.shutdown()
    }
}
