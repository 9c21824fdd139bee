import ArgumentParser
import FanoutEngine
import FanoutJobs
import FanoutService
import FastCGI

/// One setting of `fanout serve`, declared once: its flag, its environment variable, its default,
/// what it means and which values it takes.
///
/// The command's options take their names and help from here, ``resolve(_:)`` reads the command
/// line, then the environment, then the default, and the README's configuration table is
/// ``markdownTable`` (a test fails when they differ). The defaults of numbers are read from the
/// configuration types themselves, so that they too are written in one place.
public struct Setting: Sendable {
    /// What values the setting takes.
    public enum Kind: Sendable {
        /// Any non-empty text.
        case text
        /// An integer within the range.
        case integer(ClosedRange<Int>)
        /// One of the listed words.
        case choice([String])
        /// On when the flag is given or the variable is `1`.
        case flag
    }

    /// The long flag without its dashes: `max-tasks`.
    public let flag: String
    /// The environment variable: `FANOUT_MAX_TASKS`.
    public let variable: String
    /// The value used when neither the flag nor the variable is set; `nil`: unset.
    public let defaultValue: String?
    /// The default as the help and the README show it, when it is not simply `defaultValue`.
    public let defaultNote: String?
    /// The value's placeholder in help, when it is not simply the flag's name.
    public let valueName: String?
    /// What the setting does, for the help and the README.
    public let summary: String
    /// Which values it takes.
    public let kind: Kind

    init(
        _ flag: String, _ variable: String, default defaultValue: String? = nil, note: String? = nil,
        value valueName: String? = nil, kind: Kind = .text, _ summary: String
    ) {
        self.flag = flag
        self.variable = variable
        self.defaultValue = defaultValue
        self.defaultNote = note
        self.valueName = valueName
        self.summary = summary
        self.kind = kind
    }

    /// The default as people read it.
    public var defaultText: String {
        if let defaultNote { return defaultNote }
        if case .flag = kind { return "off" }
        return defaultValue.map { "`\($0)`" } ?? "—"
    }

    /// The option's name for ArgumentParser.
    var name: NameSpecification { .customLong(flag) }

    /// The option's help: the summary, then the variable and the default.
    var help: ArgumentHelp {
        let variableText = if case .flag = kind { "\(variable)=1" } else { variable }
        let defaultPart = defaultText == "—" ? "" : ", default " + defaultText.replacingBackticks()
        return ArgumentHelp(
            "\(summary.replacingBackticks()) [\(variableText)\(defaultPart)]", valueName: valueName)
    }

    /// The value from the command line, else the environment, else the default; checked against
    /// ``kind``.
    ///
    /// - Throws: `ValidationError` naming the flag and the variable.
    func resolve(_ commandLine: String?, environment: [String: String]) throws -> String? {
        let raw: String?
        if let commandLine {
            raw = commandLine
        } else if let value = environment[variable], !value.isEmpty {
            raw = value
        } else {
            raw = nil
        }
        guard let raw else { return defaultValue }
        switch kind {
        case .text, .flag:
            return raw
        case .integer(let range):
            guard let value = Int(raw), range.contains(value) else {
                throw ValidationError(
                    "--\(flag) / \(variable) must be an integer from \(range.lowerBound) to \(range.upperBound), not '\(raw)'")
            }
            return String(value)
        case .choice(let words):
            guard words.contains(raw) else {
                throw ValidationError("--\(flag) / \(variable) must be one of \(words.joined(separator: ", ")), not '\(raw)'")
            }
            return raw
        }
    }

    /// The integer value; see ``resolve(_:environment:)``.
    func integer(_ commandLine: String?, environment: [String: String]) throws -> Int {
        // Every integer setting has a default, and `resolve` checked the value.
        Int(try resolve(commandLine, environment: environment)!)!
    }

    /// A flag's value: given on the command line, or its variable set to `1`.
    func isOn(_ commandLine: Bool, environment: [String: String]) -> Bool {
        commandLine || environment[variable] == "1"
    }
}

extension Setting {
    private static let transport = FastCGIServer.Configuration()
    private static let service = FanoutService.Configuration()
    private static let application = FanoutApplication.Configuration()
    private static let jobs = JobManager.Configuration()

    static let socket = Setting(
        "socket", "FANOUT_SOCKET", value: "path", "Unix socket to listen on when not started by spawn-fcgi or systemd")
    static let socketMode = Setting(
        "socket-mode", "FANOUT_SOCKET_MODE", default: "660", value: "octal", "its permission bits (octal)")
    static let listen = Setting(
        "listen", "FANOUT_LISTEN", value: "host:port",
        "`HOST:PORT` (IPv4) to listen on instead; loopback only unless `--allow-remote`")
    static let allowRemote = Setting(
        "allow-remote", "FANOUT_ALLOW_REMOTE", kind: .flag, "allow a non-loopback `--listen` (don't)")
    static let ioThreads = Setting(
        "io-threads", "FANOUT_IO_THREADS", default: "\(transport.ioThreads)", kind: .integer(1...256),
        "event loops: threads that read, run and answer requests (one per core)")
    static let maxConnections = Setting(
        "max-connections", "FANOUT_MAX_CONNECTIONS", default: "\(transport.maximumConnections)",
        kind: .integer(1...1_000_000),
        "FastCGI connections open at once; keep it above `--max-batches-in-flight` so excess batches get `503` at once (Fanout raises its descriptor limit to the hard limit)"
    )
    static let maxBodyBytes = Setting(
        "max-body-bytes", "FANOUT_MAX_BODY_BYTES", default: "\(service.maximumBodyBytes)", kind: .integer(1...(1 << 30)),
        "largest body; keep nginx's `client_max_body_size` equal")
    static let maxTasks = Setting(
        "max-tasks", "FANOUT_MAX_TASKS", default: "\(service.limits.maximumTasks)", kind: .integer(1...10_000_000),
        "tasks per batch")
    static let maxIdLength = Setting(
        "max-id-length", "FANOUT_MAX_ID_LENGTH", default: "\(service.limits.maximumIdLength)",
        kind: .integer(1...4096), "task id length, in characters")
    static let maxDepth = Setting(
        "max-depth", "FANOUT_MAX_DEPTH", default: "\(service.limits.maximumDepth)", kind: .integer(3...10_000),
        "JSON nesting depth of a body")
    static let maxTaskTimeoutMs = Setting(
        "max-task-timeout-ms", "FANOUT_MAX_TASK_TIMEOUT_MS", default: "\(service.limits.maximumTaskTimeoutMilliseconds)",
        kind: .integer(1...86_400_000), "longest task (and `sleep`), in ms")
    static let maxBatchTimeoutMs = Setting(
        "max-batch-timeout-ms", "FANOUT_MAX_BATCH_TIMEOUT_MS",
        default: "\(service.limits.maximumBatchTimeoutMilliseconds)", kind: .integer(1...86_400_000),
        "longest batch, in ms; keep nginx's `fastcgi_read_timeout` above it")
    static let maxConcurrency = Setting(
        "max-concurrency", "FANOUT_MAX_CONCURRENCY", default: "\(service.limits.maximumConcurrency)",
        kind: .integer(1...100_000), "tasks of one batch running at once (also a batch's default)")
    static let maxBatchesInFlight = Setting(
        "max-batches-in-flight", "FANOUT_MAX_BATCHES_IN_FLIGHT", default: "\(service.maximumBatchesInFlight)",
        kind: .integer(1...1_000_000), "batches running at once; past it, `503`")
    static let shutdownGraceSeconds = Setting(
        "shutdown-grace-seconds", "FANOUT_SHUTDOWN_GRACE_SECONDS",
        default: "\(application.shutdownGrace.components.seconds)", kind: .integer(0...3600),
        "time running batches and jobs get to finish after SIGTERM or SIGINT")
    static let logLevel = Setting(
        "log-level", "FANOUT_LOG_LEVEL", default: "info",
        kind: .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]),
        "`trace`, `debug`, `info` (a line per request), `notice`, `warning`, `error` or `critical`")
    static let logFormat = Setting(
        "log-format", "FANOUT_LOG_FORMAT", default: "logfmt", kind: .choice(["logfmt", "json"]),
        "`logfmt` (`key=value`, quoted where needed) or `json` (an object per line), on stderr")
    static let dataDir = Setting(
        "data-dir", "FANOUT_DATA_DIR", default: application.dataDirectory, value: "path",
        "job store directory (SQLite), shared by responders naming it; `none` disables jobs")
    static let databaseURL = Setting(
        "database-url", "FANOUT_DATABASE_URL", note: "— (SQLite)", value: "url",
        "PostgreSQL job store shared by several hosts, `postgres://USER:PASSWORD@HOST:PORT/DB` or `postgres://USER@/DB?host=/socket/dir`; replaces `--data-dir` ([docs/multi-host.md](docs/multi-host.md))"
    )
    static let databaseConnections = Setting(
        "database-connections", "FANOUT_DATABASE_CONNECTIONS", default: "\(application.databaseConnections)",
        kind: .integer(3...1000),
        "most connections to that database per responder, two of them held (liveness lock, `LISTEN`)")
    static let jobRetentionSeconds = Setting(
        "job-retention-seconds", "FANOUT_JOB_RETENTION_SECONDS", default: "\(Int(jobs.retentionSeconds))",
        kind: .integer(1...(365 * 86400)), "how long finished jobs are kept")
    static let maxPendingJobs = Setting(
        "max-pending-jobs", "FANOUT_MAX_PENDING_JOBS", default: "\(jobs.maximumPending)", kind: .integer(1...10_000_000),
        "jobs queued or running, all processes; past it, `503`")
    static let maxRunningJobs = Setting(
        "max-running-jobs", "FANOUT_MAX_RUNNING_JOBS", default: "\(jobs.maximumRunning)", kind: .integer(0...1024),
        "jobs one process runs at once; `0`: accepts jobs, leaves running them to others")
    static let maxJobResultBytes = Setting(
        "max-job-result-bytes", "FANOUT_MAX_JOB_RESULT_BYTES", default: "\(jobs.maximumResultBytes)",
        kind: .integer(1024...(1 << 30)), "largest stored `results` of one job")
    static let upstream = Setting(
        "upstream", "FANOUT_UPSTREAMS", note: "none (`make run`: `demo`)", value: "name=url",
        "an API `http` tasks may call, as `NAME=URL`; repeatable (variable: comma-separated)")
    static let upstreamsFile = Setting(
        "upstreams-file", "FANOUT_UPSTREAMS_FILE", value: "path",
        "JSON file of upstreams with their full policy ([below](#upstreams))")
    static let clientIdentityParam = Setting(
        "client-identity-param", "FANOUT_CLIENT_IDENTITY_PARAM", note: "— (one tenant)", value: "name",
        "FastCGI parameter with the client's identity, set by nginx ([below](#clients-kept-apart))")
    static let maxBatchesPerClient = Setting(
        "max-batches-per-client", "FANOUT_MAX_BATCHES_PER_CLIENT", default: "\(service.maximumBatchesInFlightPerClient)",
        kind: .integer(1...1_000_000), "with clients kept apart: batches one client runs at once; past it, `429`")
    static let maxPendingJobsPerClient = Setting(
        "max-pending-jobs-per-client", "FANOUT_MAX_PENDING_JOBS_PER_CLIENT",
        default: "\(jobs.maximumPendingPerClient)", kind: .integer(1...10_000_000),
        "with clients kept apart: jobs one client has queued or running; past it, `429`")

    /// Every setting, in the order of the help and the README.
    public static let all: [Setting] = [
        socket, socketMode, listen, allowRemote, ioThreads, maxConnections, maxBodyBytes, maxTasks, maxIdLength,
        maxDepth, maxTaskTimeoutMs, maxBatchTimeoutMs, maxConcurrency, maxBatchesInFlight, shutdownGraceSeconds,
        logLevel, logFormat, dataDir, databaseURL, databaseConnections, jobRetentionSeconds, maxPendingJobs,
        maxRunningJobs, maxJobResultBytes, upstream, upstreamsFile, clientIdentityParam, maxBatchesPerClient,
        maxPendingJobsPerClient,
    ]

    /// The README's configuration table.
    public static var markdownTable: String {
        var lines = ["| flag | variable | default | meaning |", "|---|---|---|---|"]
        for setting in all {
            let variable = if case .flag = setting.kind { "`\(setting.variable)=1`" } else { "`\(setting.variable)`" }
            lines.append("| `--\(setting.flag)` | \(variable) | \(setting.defaultText) | \(setting.summary) |")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension String {
    /// Markdown's code marks and links dropped, for terminal help.
    fileprivate func replacingBackticks() -> String {
        var text = filter { $0 != "`" }
        // "[below](#anchor)" and "([docs/x.md](docs/x.md))" read as their text.
        while let open = text.range(of: "]("), let close = text[open.upperBound...].firstIndex(of: ")") {
            text.removeSubrange(open.lowerBound...close)
            if let bracket = text[..<open.lowerBound].lastIndex(of: "[") { text.remove(at: bracket) }
        }
        return text
    }
}
