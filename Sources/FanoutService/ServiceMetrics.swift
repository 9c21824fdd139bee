import CoreMetrics
import Metrics
import FanoutEngine
import NIOConcurrencyHelpers
import Prometheus

#if canImport(Glibc)
    import Glibc
#endif

/// Fanout's metrics, served by `GET /metrics` in the Prometheus text format.
///
/// Recorded through swift-metrics into a swift-prometheus registry. What the hot path touches is
/// made once and kept: a request costs one lookup of its (route, method, status) handles under a
/// lock, one counter increment and one histogram observation; a batch costs one counter update
/// per operation and status it holds, and its tasks' durations are tallied without a lock and
/// merged once per batch (``TaskDurations``: a swift-prometheus histogram takes a lock and walks
/// its buckets for every observation, which cost batches of 100 echo tasks 15% of their
/// throughput). Gauges that mirror state kept elsewhere (requests and connections open, batches
/// and jobs in flight, the process's memory and descriptors) are read when scraped, so they cost
/// nothing between scrapes.
///
/// Labels are bounded: route templates (never raw paths), methods from a fixed list, the status
/// codes Fanout answers with, operation names from the registry, upstream names from the
/// configuration; never a task id, job id or client.
public final class ServiceMetrics: Sendable {
    /// The registry the metrics live in; `GET /metrics` writes it out.
    public let registry: PrometheusCollectorRegistry
    /// Makes the metrics of the layers below (upstream calls, the job store) in the same registry.
    public let factory: PrometheusMetricsFactory

    /// OpenTelemetry's buckets for `http.server.request.duration`, in seconds.
    static let requestBuckets: [Duration] = [
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
    ].map { .nanoseconds(Int64($0 * 1e9)) }
    /// Tasks run from microseconds (`echo`) to a minute (the longest task by default).
    static let taskBuckets: [Duration] = [
        0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    ].map { .nanoseconds(Int64($0 * 1e9)) }

    private struct RequestKey: Hashable {
        var route: Route
        var method: String
        var status: Int
    }

    private struct RequestHandles {
        let count: CoreMetrics.Counter
        let duration: CoreMetrics.Timer
    }

    private struct TaskHandles {
        let duration: TaskDurations.Series
        let succeeded, failed, skipped, cancelled: CoreMetrics.Counter
    }

    private let requests = NIOLockedValueBox<[RequestKey: RequestHandles]>([:])
    private let tasks = NIOLockedValueBox<[String: TaskHandles]>([:])
    private let taskDurations = TaskDurations(name: "fanout_task_duration_seconds", bounds: ServiceMetrics.taskBuckets)
    private let shed: [String: CoreMetrics.Counter]
    private let gauges: Gauges
    private let cpuSeconds: CoreMetrics.FloatingPointCounter
    private let cpuSecondsSeen = NIOLockedValueBox(0.0)
    /// Reads the transport's state when scraped; set once the transport exists.
    private let transportProbe = NIOLockedValueBox<(@Sendable () -> (requests: Int, connections: Int))?>(nil)

    private struct Gauges {
        let activeRequests, connections, batchesInFlight, jobsQueued, jobsRunning: CoreMetrics.Gauge
        let residentMemory, openDescriptors, maximumDescriptors, startTime: CoreMetrics.Gauge
    }

    /// The routes Fanout serves, as label values.
    enum Route: String, Sendable {
        case batch = "/batch"
        case job = "/batch/{id}"
        case ops = "/ops"
        case operation = "/ops/{name}"
        case healthz = "/healthz"
        case metrics = "/metrics"
        /// Anything else (answered 404): one label value, whatever the path.
        case other = "other"

        init(path: String) {
            switch path {
            case "/batch": self = .batch
            case "/ops": self = .ops
            case "/healthz": self = .healthz
            case "/metrics": self = .metrics
            default:
                if path.hasPrefix("/batch/") {
                    self = .job
                } else if path.hasPrefix("/ops/") {
                    self = .operation
                } else {
                    self = .other
                }
            }
        }
    }

    /// Creates the metrics in a registry of their own.
    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = ["fanout_http_server_request_duration_seconds": Self.requestBuckets]
        // Upstream calls and store writes: the request buckets suit them.
        factory.defaultDurationHistogramBuckets = Self.requestBuckets
        self.factory = factory
        shed = Dictionary(
            uniqueKeysWithValues: ["overloaded", "draining", "client_limit"].map {
                ($0, CoreMetrics.Counter(label: "fanout_batches_shed_total", dimensions: [("reason", $0)], factory: factory))
            })
        func gauge(_ name: String) -> CoreMetrics.Gauge { CoreMetrics.Gauge(label: name, factory: factory) }
        gauges = Gauges(
            activeRequests: gauge("fanout_http_server_active_requests"),
            connections: gauge("fanout_fastcgi_connections"),
            batchesInFlight: gauge("fanout_batches_in_flight"),
            jobsQueued: CoreMetrics.Gauge(label: "fanout_jobs", dimensions: [("state", "queued")], factory: factory),
            jobsRunning: CoreMetrics.Gauge(label: "fanout_jobs", dimensions: [("state", "running")], factory: factory),
            residentMemory: gauge("process_resident_memory_bytes"),
            openDescriptors: gauge("process_open_fds"),
            maximumDescriptors: gauge("process_max_fds"),
            startTime: gauge("process_start_time_seconds"))
        cpuSeconds = CoreMetrics.FloatingPointCounter(label: "process_cpu_seconds_total", factory: factory)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        gauges.startTime.record(Double(now.tv_sec))
    }

    /// Lets scrapes read how many requests and connections the transport has open.
    public func setTransportProbe(_ probe: @escaping @Sendable () -> (requests: Int, connections: Int)) {
        transportProbe.withLockedValue { $0 = probe }
    }

    // MARK: Recording

    /// Counts one answered request and observes its duration.
    func requestAnswered(path: String, method: String, status: Int, duration: Duration) {
        let key = RequestKey(route: Route(path: path), method: Self.methodLabel(method), status: status)
        let handles =
            requests.withLockedValue { $0[key] }
            ?? requests.withLockedValue { handles in
                if let existing = handles[key] { return existing }
                let dimensions = [("route", key.route.rawValue), ("method", key.method), ("status", String(status))]
                let made = RequestHandles(
                    count: CoreMetrics.Counter(label: "fanout_http_requests_total", dimensions: dimensions, factory: factory),
                    duration: CoreMetrics.Timer(
                        label: "fanout_http_server_request_duration_seconds", dimensions: dimensions, factory: factory))
                handles[key] = made
                return made
            }
        handles.count.increment()
        handles.duration.record(duration: duration)
    }

    /// Counts the one task of a direct operation call (`POST /ops/{name}`).
    func taskFinished(operation: String, status: TaskStatus, duration: Duration) {
        var counts = BatchResult.Summary()
        counts.add(status)
        let handles = taskHandles(operation)
        var durations = TaskDurations.Tally()
        durations.add(duration, bounds: taskDurations.bounds)
        add(counts, durations, to: handles)
    }

    /// Counts a batch refused for load: `overloaded` (503), `draining` (503) or `client_limit` (429).
    func batchShed(_ reason: String) {
        shed[reason]?.increment()
    }

    /// Counts the tasks of a finished batch by operation and status, and observes the duration of
    /// each task that ran.
    public func batchFinished(_ batch: Batch, _ result: BatchResult) {
        var lastOperation = ""
        var handles: TaskHandles?
        var counts = BatchResult.Summary()
        var durations = TaskDurations.Tally()
        for (task, outcome) in zip(batch.tasks, result.results) {
            if task.operation != lastOperation || handles == nil {
                if let handles { add(counts, durations, to: handles) }
                counts = BatchResult.Summary()
                durations = TaskDurations.Tally()
                lastOperation = task.operation
                handles = taskHandles(task.operation)
            }
            counts.add(outcome.status)
            if outcome.duration > .zero { durations.add(outcome.duration, bounds: taskDurations.bounds) }
        }
        if let handles { add(counts, durations, to: handles) }
    }

    private func add(_ counts: BatchResult.Summary, _ durations: TaskDurations.Tally, to handles: TaskHandles) {
        Self.add(counts, to: handles)
        if durations.count > 0 { taskDurations.merge(durations, into: handles.duration) }
    }

    private static func add(_ counts: BatchResult.Summary, to handles: TaskHandles) {
        if counts.succeeded > 0 { handles.succeeded.increment(by: counts.succeeded) }
        if counts.failed > 0 { handles.failed.increment(by: counts.failed) }
        if counts.skipped > 0 { handles.skipped.increment(by: counts.skipped) }
        if counts.cancelled > 0 { handles.cancelled.increment(by: counts.cancelled) }
    }

    private func taskHandles(_ operation: String) -> TaskHandles {
        if let handles = tasks.withLockedValue({ $0[operation] }) { return handles }
        return tasks.withLockedValue { tasks in
            if let existing = tasks[operation] { return existing }
            func counter(_ status: String) -> CoreMetrics.Counter {
                CoreMetrics.Counter(
                    label: "fanout_tasks_total", dimensions: [("operation", operation), ("status", status)],
                    factory: factory)
            }
            let made = TaskHandles(
                duration: taskDurations.series(labels: [("operation", operation)]),
                succeeded: counter("succeeded"), failed: counter("failed"), skipped: counter("skipped"),
                cancelled: counter("cancelled"))
            tasks[operation] = made
            return made
        }
    }

    private static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    /// The method, or `other` for one Fanout never serves: clients choose methods freely.
    static func methodLabel(_ method: String) -> String {
        methods.contains(method) ? method : "other"
    }

    // MARK: Scraping

    /// The text exposition, with the state gauges read now.
    func render(batchesInFlight: Int, jobs: (queued: Int, running: Int)?) -> [UInt8] {
        if let probe = transportProbe.withLockedValue({ $0 }) {
            let transport = probe()
            gauges.activeRequests.record(transport.requests)
            gauges.connections.record(transport.connections)
        }
        gauges.batchesInFlight.record(batchesInFlight)
        if let jobs {
            gauges.jobsQueued.record(jobs.queued)
            gauges.jobsRunning.record(jobs.running)
        }
        let process = ProcessStatistics.read()
        gauges.residentMemory.record(process.residentBytes)
        gauges.openDescriptors.record(process.openDescriptors)
        gauges.maximumDescriptors.record(process.maximumDescriptors)
        cpuSecondsSeen.withLockedValue { seen in
            if process.cpuSeconds > seen {
                cpuSeconds.increment(by: process.cpuSeconds - seen)
                seen = process.cpuSeconds
            }
        }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        registry.emit(into: &buffer)
        taskDurations.emit(into: &buffer)
        return buffer
    }
}

/// The process's resident memory, descriptors and CPU time, from /proc and the C library.
struct ProcessStatistics {
    var residentBytes = 0
    var openDescriptors = 0
    var maximumDescriptors = 0
    var cpuSeconds = 0.0

    static func read() -> ProcessStatistics {
        var statistics = ProcessStatistics()
        // /proc/self/statm: size resident shared … in pages.
        if let text = readSmallFile("/proc/self/statm") {
            let fields = text.split(separator: " ")
            if fields.count > 1, let pages = Int(fields[1]) { statistics.residentBytes = pages * Int(sysconf(Int32(_SC_PAGESIZE))) }
        }
        if let directory = opendir("/proc/self/fd") {
            while let entry = readdir(directory) {
                if entry.pointee.d_name.0 != UInt8(ascii: ".") { statistics.openDescriptors += 1 }
            }
            closedir(directory)
            statistics.openDescriptors -= 1  // the directory's own descriptor
        }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            statistics.maximumDescriptors = Int(min(limit.rlim_cur, rlim_t(Int.max)))
        }
        var usage = rusage()
        if getrusage(RUSAGE_SELF.rawValue, &usage) == 0 {
            statistics.cpuSeconds =
                Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        return statistics
    }

    private static func readSmallFile(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = Glibc.read(descriptor, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }
}

/// A histogram whose observations are tallied by the caller without a lock and merged in one
/// step: the tasks of a batch are counted where the batch ends, then added under one lock.
/// Written in the Prometheus text format next to the registry's metrics.
final class TaskDurations: Sendable {
    /// Upper bounds of the buckets, in nanoseconds; `+Inf` is implied.
    let bounds: [Int64]
    private let name: String
    private let series = NIOLockedValueBox<[(labels: String, counts: Counts)]>([])

    /// One labelled series; its index in ``series``.
    struct Series: Sendable {
        let index: Int
    }

    struct Counts: Sendable {
        /// Observations per bucket (not cumulative), the last for `+Inf`.
        var buckets: [Int]
        var sum: Int64 = 0
        var count = 0
    }

    /// Observations made without a lock, for ``merge(_:into:)``: 17 buckets at most, inline.
    struct Tally {
        var buckets = InlineArray<17, Int>(repeating: 0)
        var sum: Int64 = 0
        var count = 0

        mutating func add(_ duration: Duration, bounds: [Int64]) {
            let (seconds, attoseconds) = duration.components
            let nanoseconds = seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
            var index = 0
            while index < bounds.count, nanoseconds > bounds[index] { index += 1 }
            buckets[index] += 1
            sum &+= nanoseconds
            count += 1
        }
    }

    init(name: String, bounds: [Duration]) {
        precondition(bounds.count < 17)
        self.name = name
        self.bounds = bounds.map { Int64($0.components.seconds) * 1_000_000_000 + $0.components.attoseconds / 1_000_000_000 }
    }

    /// A new series with `labels` (made once per label set, by the caller's cache).
    func series(labels: [(String, String)]) -> Series {
        let rendered = labels.map { "\($0.0)=\"\($0.1)\"" }.joined(separator: ",")
        return series.withLockedValue { series in
            series.append((rendered, Counts(buckets: Array(repeating: 0, count: bounds.count + 1))))
            return Series(index: series.count - 1)
        }
    }

    func merge(_ tally: Tally, into target: Series) {
        series.withLockedValue { series in
            for index in 0...bounds.count { series[target.index].counts.buckets[index] += tally.buckets[index] }
            series[target.index].counts.sum &+= tally.sum
            series[target.index].counts.count += tally.count
        }
    }

    /// `# TYPE`, then for each series its cumulative buckets, `+Inf`, `_sum` (seconds) and `_count`.
    func emit(into buffer: inout [UInt8]) {
        let snapshot = series.withLockedValue { $0 }
        guard !snapshot.isEmpty else { return }
        var text = "# TYPE \(name) histogram\n"
        for (labels, counts) in snapshot {
            var cumulative = 0
            for (index, bound) in bounds.enumerated() {
                cumulative += counts.buckets[index]
                text += "\(name)_bucket{\(labels),le=\"\(Self.seconds(bound))\"} \(cumulative)\n"
            }
            text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(counts.count)\n"
            text += "\(name)_sum{\(labels)} \(Self.seconds(counts.sum))\n"
            text += "\(name)_count{\(labels)} \(counts.count)\n"
        }
        buffer.append(contentsOf: text.utf8)
    }

    private static func seconds(_ nanoseconds: Int64) -> String {
        String(Double(nanoseconds) / 1e9)
    }
}
