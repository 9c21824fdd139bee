import ArgumentParser
import CLinux
import FanoutHTTP
import FanoutJobs
import FanoutService
import FastCGI
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The `fanout` executable: reads options, sets up logging and signals, runs the responder.
@main
struct Fanout: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "Fanout: a batch endpoint served over FastCGI (behind nginx).",
        discussion: """
            Start it under spawn-fcgi, which hands over the listening socket as descriptor 0, or give \
            --socket (or --listen) to listen by itself. Every option can also be set with the \
            environment variable named in its help; the command line wins.
            """)

    @Option(help: "Unix socket to listen on when not started by spawn-fcgi. [FANOUT_SOCKET]")
    var socket: String?

    @Option(help: "Permission bits of that socket, in octal. [FANOUT_SOCKET_MODE, default 660]")
    var socketMode: String?

    @Option(help: "IPv4 HOST:PORT to listen on instead of a Unix socket; loopback only. [FANOUT_LISTEN]")
    var listen: String?

    @Flag(help: "Allow --listen on an address outside 127.0.0.0/8. [FANOUT_ALLOW_REMOTE=1]")
    var allowRemote = false

    @Option(help: "Event loops that read, run and answer requests; one per core. [FANOUT_IO_THREADS, default 2]")
    var ioThreads: Int?

    @Option(
        help:
            "Most FastCGI connections open at once; above --max-batches-in-flight, so that excess batches get 503 at once. [FANOUT_MAX_CONNECTIONS, default 4096]"
    )
    var maxConnections: Int?

    @Option(
        help:
            "Largest request body in bytes; keep nginx's client_max_body_size equal. [FANOUT_MAX_BODY_BYTES, default 8388608]"
    )
    var maxBodyBytes: Int?

    @Option(help: "Most tasks in one batch. [FANOUT_MAX_TASKS, default 100000]")
    var maxTasks: Int?

    @Option(help: "Longest task id, in characters. [FANOUT_MAX_ID_LENGTH, default 128]")
    var maxIdLength: Int?

    @Option(help: "Deepest JSON nesting in a body. [FANOUT_MAX_DEPTH, default 64]")
    var maxDepth: Int?

    @Option(help: "Longest task run (and sleep), in ms. [FANOUT_MAX_TASK_TIMEOUT_MS, default 60000]")
    var maxTaskTimeoutMs: Int?

    @Option(
        help:
            "Longest batch run, in ms; keep nginx's fastcgi_read_timeout above it. [FANOUT_MAX_BATCH_TIMEOUT_MS, default 60000]"
    )
    var maxBatchTimeoutMs: Int?

    @Option(help: "Most tasks of one batch running at once. [FANOUT_MAX_CONCURRENCY, default 256]")
    var maxConcurrency: Int?

    @Option(help: "Most batches running at once; past it, 503. [FANOUT_MAX_BATCHES_IN_FLIGHT, default 1024]")
    var maxBatchesInFlight: Int?

    @Option(
        help: "Seconds running batches get to finish after SIGTERM/SIGINT. [FANOUT_SHUTDOWN_GRACE_SECONDS, default 30]")
    var shutdownGraceSeconds: Int?

    @Option(help: "trace, debug, info, notice, warning, error or critical. [FANOUT_LOG_LEVEL, default info]")
    var logLevel: String?

    @Option(
        help:
            "Directory of the asynchronous job store (SQLite), shared by responders that name the same one; \"none\" disables jobs. [FANOUT_DATA_DIR, default .run/data]"
    )
    var dataDir: String?

    @Option(
        help:
            "PostgreSQL database of the asynchronous job store, shared by every host that names it (postgres://USER:PASSWORD@HOST:PORT/DB, or postgres://USER@/DB?host=/socket/dir); replaces --data-dir. [FANOUT_DATABASE_URL]"
    )
    var databaseURL: String?

    @Option(
        help:
            "Most connections to that database, two of them held (liveness lock, notifications). [FANOUT_DATABASE_CONNECTIONS, default 10]"
    )
    var databaseConnections: Int?

    @Option(help: "How long finished jobs are kept, in seconds. [FANOUT_JOB_RETENTION_SECONDS, default 86400]")
    var jobRetentionSeconds: Int?

    @Option(
        help: "Most jobs queued or running, over all responders; past it, 503. [FANOUT_MAX_PENDING_JOBS, default 10000]"
    )
    var maxPendingJobs: Int?

    @Option(help: "Jobs this responder runs at once; 0 accepts jobs but leaves running them to other responders. [FANOUT_MAX_RUNNING_JOBS, default 4]")
    var maxRunningJobs: Int?

    @Option(help: "Largest stored results of one job, in bytes. [FANOUT_MAX_JOB_RESULT_BYTES, default 16777216]")
    var maxJobResultBytes: Int?

    @Option(
        name: .customLong("upstream"),
        help: "An API that http tasks may call, as NAME=URL; repeatable. [FANOUT_UPSTREAMS: NAME=URL,NAME=URL]")
    var upstreams: [String] = []

    @Option(
        help:
            "JSON file of upstreams with their full policy (methods, path_prefixes, forward_headers, headers, max_connections, timeout_ms, retry, max_response_bytes). [FANOUT_UPSTREAMS_FILE]"
    )
    var upstreamsFile: String?

    @Option(
        help:
            "FastCGI parameter carrying the client's identity, set by nginx; keeps clients' jobs, idempotency keys and limits apart. [FANOUT_CLIENT_IDENTITY_PARAM, default none: one tenant]"
    )
    var clientIdentityParam: String?

    @Option(
        help: "With clients kept apart: batches one client may run at once; past it, 429. [FANOUT_MAX_BATCHES_PER_CLIENT, default 64]"
    )
    var maxBatchesPerClient: Int?

    @Option(
        help:
            "With clients kept apart: jobs one client may have queued or running; past it, 429. [FANOUT_MAX_PENDING_JOBS_PER_CLIENT, default 1000]"
    )
    var maxPendingJobsPerClient: Int?

    mutating func run() throws {
        // libfcgi first, then block the shutdown signals before any thread exists: every thread
        // inherits the mask, so the signals interrupt no read or write and arrive only here.
        FastCGIServer.initializeLibrary()
        // Buffers of 4 MiB and more (the body and results of a batch of 100,000 tasks) get pages
        // of their own, returned to the system when freed. glibc's default raises this threshold
        // as large blocks are freed, after which such buffers stay in the heap and a few huge
        // batches leave the process tens of MiB larger for good.
        mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024)
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGTERM, SIGINT, SIGUSR1] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let configuration = try makeConfiguration()
        let levelName = try Settings.string(logLevel, "FANOUT_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelName) else {
            throw ValidationError("unknown log level '\(levelName)'")
        }
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level) }
        let logger = Logger(label: "fanout")

        let application: FanoutApplication
        do {
            application = try FanoutApplication(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot start", metadata: ["reason": "\(error)"])
            throw ExitCode.failure
        }
        application.start()

        var received: Int32 = 0
        repeat {
            sigwait(&signals, &received)
        } while received == SIGUSR1  // sent by some process managers; nothing to do
        logger.notice("shutting down", metadata: ["signal": "\(received == SIGINT ? "SIGINT" : "SIGTERM")"])
        application.shutdown()
    }

    /// The upstreams of `--upstream`/`FANOUT_UPSTREAMS` and `--upstreams-file`/`FANOUT_UPSTREAMS_FILE`.
    private func makeUpstreams() throws -> [Upstream] {
        do {
            var list = try UpstreamConfiguration.parseSimple(
                upstreams.isEmpty ? (try Settings.string(nil, "FANOUT_UPSTREAMS")).map { [$0] } ?? [] : upstreams)
            if let path = try Settings.string(upstreamsFile, "FANOUT_UPSTREAMS_FILE") {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw ValidationError("cannot read the upstreams file \(path)")
                }
                list += try UpstreamConfiguration.parseFile(Array(data)) { name in
                    getenv(name).map { String(cString: $0) }
                }
            }
            try UpstreamConfiguration.checkUnique(list)
            return list
        } catch let error as UpstreamConfigurationError {
            throw ValidationError(error.description)
        }
    }

    private func makeConfiguration() throws -> FanoutApplication.Configuration {
        var configuration = FanoutApplication.Configuration()
        var transport = configuration.transport
        var service = configuration.service

        if let socket = try Settings.string(socket, "FANOUT_SOCKET") {
            let modeText = try Settings.string(socketMode, "FANOUT_SOCKET_MODE") ?? "660"
            guard let mode = UInt32(modeText, radix: 8), mode <= 0o777 else {
                throw ValidationError("socket mode must be octal permission bits, such as 660")
            }
            transport.listener = .unixSocket(path: socket, mode: mode)
        } else if let listen = try Settings.string(listen, "FANOUT_LISTEN") {
            let parts = listen.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else {
                throw ValidationError("--listen takes HOST:PORT, such as 127.0.0.1:9000")
            }
            transport.listener = .tcp(host: String(parts[0]), port: port)
        }
        let allowRemoteVariable = try Settings.string(nil, "FANOUT_ALLOW_REMOTE")
        transport.allowNonLoopback = allowRemote || allowRemoteVariable == "1"
        transport.ioThreads = try Settings.integer(
            ioThreads, "FANOUT_IO_THREADS", default: transport.ioThreads, range: 1...256)
        transport.maximumConnections = try Settings.integer(
            maxConnections, "FANOUT_MAX_CONNECTIONS", default: transport.maximumConnections, range: 1...1_000_000)
        // Each connection is a descriptor: take the whole hard limit (systemd and shells often set
        // a soft limit of 1024), and keep room for listeners, upstream calls and the job store.
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            if limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max
                _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
            }
            let usable = Int(min(limit.rlim_cur, rlim_t(Int.max))) - 256
            if transport.maximumConnections > usable {
                throw ValidationError(
                    "--max-connections \(transport.maximumConnections) needs more descriptors than the limit of "
                        + "\(limit.rlim_cur) allows (raise LimitNOFILE / ulimit -n, or lower it to \(max(usable, 1)))")
            }
        }

        service.maximumBodyBytes = try Settings.integer(
            maxBodyBytes, "FANOUT_MAX_BODY_BYTES", default: service.maximumBodyBytes, range: 1...(1 << 30))
        service.maximumBatchesInFlight = try Settings.integer(
            maxBatchesInFlight, "FANOUT_MAX_BATCHES_IN_FLIGHT", default: service.maximumBatchesInFlight,
            range: 1...1_000_000)
        var limits = service.limits
        limits.maximumTasks = try Settings.integer(
            maxTasks, "FANOUT_MAX_TASKS", default: limits.maximumTasks, range: 1...10_000_000)
        limits.maximumIdLength = try Settings.integer(
            maxIdLength, "FANOUT_MAX_ID_LENGTH", default: limits.maximumIdLength, range: 1...4096)
        limits.maximumDepth = try Settings.integer(
            maxDepth, "FANOUT_MAX_DEPTH", default: limits.maximumDepth, range: 3...10_000)
        limits.maximumTaskTimeoutMilliseconds = try Settings.integer(
            maxTaskTimeoutMs, "FANOUT_MAX_TASK_TIMEOUT_MS", default: limits.maximumTaskTimeoutMilliseconds,
            range: 1...86_400_000)
        limits.maximumBatchTimeoutMilliseconds = try Settings.integer(
            maxBatchTimeoutMs, "FANOUT_MAX_BATCH_TIMEOUT_MS", default: limits.maximumBatchTimeoutMilliseconds,
            range: 1...86_400_000)
        limits.maximumConcurrency = try Settings.integer(
            maxConcurrency, "FANOUT_MAX_CONCURRENCY", default: limits.maximumConcurrency, range: 1...100_000)
        service.limits = limits
        service.clientIdentityParameter = try Settings.string(clientIdentityParam, "FANOUT_CLIENT_IDENTITY_PARAM")
        service.maximumBatchesInFlightPerClient = try Settings.integer(
            maxBatchesPerClient, "FANOUT_MAX_BATCHES_PER_CLIENT", default: service.maximumBatchesInFlightPerClient,
            range: 1...1_000_000)

        let grace = try Settings.integer(
            shutdownGraceSeconds, "FANOUT_SHUTDOWN_GRACE_SECONDS", default: 30, range: 0...3600)
        configuration.shutdownGrace = .seconds(grace)

        if let dataDirectory = try Settings.string(dataDir, "FANOUT_DATA_DIR") {
            configuration.dataDirectory = dataDirectory == "none" ? nil : dataDirectory
        }
        if let url = try Settings.string(databaseURL, "FANOUT_DATABASE_URL") {
            do {
                configuration.databaseURL = try DatabaseURL(url)
            } catch {
                throw ValidationError("FANOUT_DATABASE_URL / --database-url: \(error)")
            }
        }
        configuration.databaseConnections = try Settings.integer(
            databaseConnections, "FANOUT_DATABASE_CONNECTIONS", default: configuration.databaseConnections,
            range: 3...1000)
        var jobs = configuration.jobs
        jobs.retentionSeconds = Double(
            try Settings.integer(
                jobRetentionSeconds, "FANOUT_JOB_RETENTION_SECONDS", default: Int(jobs.retentionSeconds),
                range: 1...(365 * 86400)))
        jobs.maximumPending = try Settings.integer(
            maxPendingJobs, "FANOUT_MAX_PENDING_JOBS", default: jobs.maximumPending, range: 1...10_000_000)
        jobs.maximumPendingPerClient = try Settings.integer(
            maxPendingJobsPerClient, "FANOUT_MAX_PENDING_JOBS_PER_CLIENT", default: jobs.maximumPendingPerClient,
            range: 1...10_000_000)
        jobs.maximumRunning = try Settings.integer(
            maxRunningJobs, "FANOUT_MAX_RUNNING_JOBS", default: jobs.maximumRunning, range: 0...1024)
        jobs.maximumResultBytes = try Settings.integer(
            maxJobResultBytes, "FANOUT_MAX_JOB_RESULT_BYTES", default: jobs.maximumResultBytes,
            range: 1024...(1 << 30))
        configuration.jobs = jobs
        configuration.upstreams = try makeUpstreams()
        configuration.transport = transport
        configuration.service = service
        return configuration
    }
}
