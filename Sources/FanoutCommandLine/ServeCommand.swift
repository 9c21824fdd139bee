import ArgumentParser
import FanoutHTTP
import FanoutJobs
import FanoutService
import FastCGI
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// `fanout serve`: the responder. Each option is a ``Setting``, declared once.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve batches over FastCGI (what runs when no subcommand is given).",
        discussion: """
            Under spawn-fcgi or systemd socket activation the listening socket is descriptor 0; \
            otherwise give --socket (or --listen). Every option can also be set with the environment \
            variable named in its help; the command line wins. SIGTERM or SIGINT shuts down gracefully.
            """)

    @Option(name: Setting.socket.name, help: Setting.socket.help) var socket: String?
    @Option(name: Setting.socketMode.name, help: Setting.socketMode.help) var socketMode: String?
    @Option(name: Setting.listen.name, help: Setting.listen.help) var listen: String?
    @Flag(name: Setting.allowRemote.name, help: Setting.allowRemote.help) var allowRemote = false
    @Option(name: Setting.ioThreads.name, help: Setting.ioThreads.help) var ioThreads: String?
    @Option(name: Setting.maxConnections.name, help: Setting.maxConnections.help) var maxConnections: String?
    @Option(name: Setting.maxBodyBytes.name, help: Setting.maxBodyBytes.help) var maxBodyBytes: String?
    @Option(name: Setting.maxTasks.name, help: Setting.maxTasks.help) var maxTasks: String?
    @Option(name: Setting.maxIdLength.name, help: Setting.maxIdLength.help) var maxIdLength: String?
    @Option(name: Setting.maxDepth.name, help: Setting.maxDepth.help) var maxDepth: String?
    @Option(name: Setting.maxTaskTimeoutMs.name, help: Setting.maxTaskTimeoutMs.help) var maxTaskTimeoutMs: String?
    @Option(name: Setting.maxBatchTimeoutMs.name, help: Setting.maxBatchTimeoutMs.help) var maxBatchTimeoutMs: String?
    @Option(name: Setting.maxConcurrency.name, help: Setting.maxConcurrency.help) var maxConcurrency: String?
    @Option(name: Setting.maxBatchesInFlight.name, help: Setting.maxBatchesInFlight.help)
    var maxBatchesInFlight: String?
    @Option(name: Setting.shutdownGraceSeconds.name, help: Setting.shutdownGraceSeconds.help)
    var shutdownGraceSeconds: String?
    @Option(name: Setting.logLevel.name, help: Setting.logLevel.help) var logLevel: String?
    @Option(name: Setting.logFormat.name, help: Setting.logFormat.help) var logFormat: String?
    @Option(name: Setting.dataDir.name, help: Setting.dataDir.help) var dataDir: String?
    @Option(name: Setting.databaseURL.name, help: Setting.databaseURL.help) var databaseURL: String?
    @Option(name: Setting.databaseConnections.name, help: Setting.databaseConnections.help)
    var databaseConnections: String?
    @Option(name: Setting.jobRetentionSeconds.name, help: Setting.jobRetentionSeconds.help)
    var jobRetentionSeconds: String?
    @Option(name: Setting.maxPendingJobs.name, help: Setting.maxPendingJobs.help) var maxPendingJobs: String?
    @Option(name: Setting.maxRunningJobs.name, help: Setting.maxRunningJobs.help) var maxRunningJobs: String?
    @Option(name: Setting.maxJobResultBytes.name, help: Setting.maxJobResultBytes.help) var maxJobResultBytes: String?
    @Option(name: Setting.upstream.name, help: Setting.upstream.help) var upstreams: [String] = []
    @Option(name: Setting.upstreamsFile.name, help: Setting.upstreamsFile.help) var upstreamsFile: String?
    @Option(name: Setting.clientIdentityParam.name, help: Setting.clientIdentityParam.help)
    var clientIdentityParam: String?
    @Option(name: Setting.maxBatchesPerClient.name, help: Setting.maxBatchesPerClient.help)
    var maxBatchesPerClient: String?
    @Option(name: Setting.maxPendingJobsPerClient.name, help: Setting.maxPendingJobsPerClient.help)
    var maxPendingJobsPerClient: String?

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        var configuration = try makeConfiguration(environment)
        let level = Logger.Level(rawValue: try Setting.logLevel.resolve(logLevel, environment: environment)!)!
        let format = StderrLogHandler.Format(rawValue: try Setting.logFormat.resolve(logFormat, environment: environment)!)!
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level, format: format) }
        let logger = Logger(label: "fanout")
        // The same line as through `logger`, written without a metadata dictionary per request.
        let requestLog = StderrLogHandler(label: "fanout", level: level, format: format)
        configuration.service.requestLog = { requestLog.logRequest($0) }

        let application: FanoutApplication
        do {
            application = try await FanoutApplication(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot start", metadata: ["reason": "\(error)"])
            throw ExitCode.failure
        }
        let heapTrimmer = HeapTrimmer.start()
        defer { heapTrimmer.cancel() }
        try await application.run()
    }

    /// The upstreams of `--upstream`/`FANOUT_UPSTREAMS` and `--upstreams-file`/`FANOUT_UPSTREAMS_FILE`.
    private func makeUpstreams(_ environment: [String: String]) throws -> [Upstream] {
        do {
            var list = try UpstreamConfiguration.parseSimple(
                upstreams.isEmpty
                    ? (try Setting.upstream.resolve(nil, environment: environment)).map { [$0] } ?? [] : upstreams)
            if let path = try Setting.upstreamsFile.resolve(upstreamsFile, environment: environment) {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw ValidationError("cannot read the upstreams file \(path)")
                }
                list += try UpstreamConfiguration.parseFile(Array(data)) { environment[$0] }
            }
            try UpstreamConfiguration.checkUnique(list)
            return list
        } catch let error as UpstreamConfigurationError {
            throw ValidationError(error.description)
        }
    }

    func makeConfiguration(_ environment: [String: String]) throws -> FanoutApplication.Configuration {
        func integer(_ setting: Setting, _ value: String?) throws -> Int {
            try setting.integer(value, environment: environment)
        }
        var configuration = FanoutApplication.Configuration()
        var transport = configuration.transport
        var service = configuration.service

        if let socket = try Setting.socket.resolve(socket, environment: environment) {
            let modeText = try Setting.socketMode.resolve(socketMode, environment: environment)!
            guard let mode = UInt32(modeText, radix: 8), mode <= 0o777 else {
                throw ValidationError("--socket-mode / FANOUT_SOCKET_MODE must be octal permission bits, such as 660")
            }
            transport.listener = .unixSocket(path: socket, mode: mode)
        } else if let listen = try Setting.listen.resolve(listen, environment: environment) {
            let parts = listen.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else {
                throw ValidationError("--listen / FANOUT_LISTEN takes HOST:PORT, such as 127.0.0.1:9000")
            }
            transport.listener = .tcp(host: String(parts[0]), port: port)
        }
        transport.allowNonLoopback = Setting.allowRemote.isOn(allowRemote, environment: environment)
        transport.ioThreads = try integer(.ioThreads, ioThreads)
        transport.maximumConnections = try integer(.maxConnections, maxConnections)
        // The request lines an event loop logs while busy go out together, at the latest shortly
        // after it becomes idle.
        transport.whenIdle = { StderrLogHandler.flushThreadBuffer() }
        try Self.raiseDescriptorLimit(for: transport.maximumConnections)

        service.maximumBodyBytes = try integer(.maxBodyBytes, maxBodyBytes)
        service.maximumBatchesInFlight = try integer(.maxBatchesInFlight, maxBatchesInFlight)
        service.limits.maximumTasks = try integer(.maxTasks, maxTasks)
        service.limits.maximumIdLength = try integer(.maxIdLength, maxIdLength)
        service.limits.maximumDepth = try integer(.maxDepth, maxDepth)
        service.limits.maximumTaskTimeoutMilliseconds = try integer(.maxTaskTimeoutMs, maxTaskTimeoutMs)
        service.limits.maximumBatchTimeoutMilliseconds = try integer(.maxBatchTimeoutMs, maxBatchTimeoutMs)
        service.limits.maximumConcurrency = try integer(.maxConcurrency, maxConcurrency)
        service.clientIdentityParameter = try Setting.clientIdentityParam.resolve(
            clientIdentityParam, environment: environment)
        service.maximumBatchesInFlightPerClient = try integer(.maxBatchesPerClient, maxBatchesPerClient)
        configuration.shutdownGrace = .seconds(try integer(.shutdownGraceSeconds, shutdownGraceSeconds))

        let dataDirectory = try Setting.dataDir.resolve(dataDir, environment: environment)
        configuration.dataDirectory = dataDirectory == "none" ? nil : dataDirectory
        if let url = try Setting.databaseURL.resolve(databaseURL, environment: environment) {
            do {
                configuration.databaseURL = try DatabaseURL(url)
            } catch {
                throw ValidationError("--database-url / FANOUT_DATABASE_URL: \(error)")
            }
        }
        configuration.databaseConnections = try integer(.databaseConnections, databaseConnections)
        configuration.jobs.retentionSeconds = Double(try integer(.jobRetentionSeconds, jobRetentionSeconds))
        configuration.jobs.maximumPending = try integer(.maxPendingJobs, maxPendingJobs)
        configuration.jobs.maximumPendingPerClient = try integer(.maxPendingJobsPerClient, maxPendingJobsPerClient)
        configuration.jobs.maximumRunning = try integer(.maxRunningJobs, maxRunningJobs)
        configuration.jobs.maximumResultBytes = try integer(.maxJobResultBytes, maxJobResultBytes)
        configuration.upstreams = try makeUpstreams(environment)
        configuration.transport = transport
        configuration.service = service
        return configuration
    }

    /// Each connection is a descriptor: take the whole hard limit (systemd and shells often set
    /// a soft limit of 1024), and keep room for listeners, upstream calls and the job store.
    private static func raiseDescriptorLimit(for connections: Int) throws {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        let usable = Int(min(limit.rlim_cur, rlim_t(Int.max))) - 256
        if connections > usable {
            throw ValidationError(
                "--max-connections \(connections) needs more descriptors than the limit of \(limit.rlim_cur) allows "
                    + "(raise LimitNOFILE / ulimit -n, or lower it to \(max(usable, 1)))")
        }
    }
}

/// `fanout settings`: the configuration table of the README, from the declarations.
struct SettingsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settings", abstract: "Print every setting of `fanout serve` as a Markdown table.")

    func run() {
        print(Setting.markdownTable, terminator: "")
    }
}
