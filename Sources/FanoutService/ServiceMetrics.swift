import CoreMetrics
import Metrics
import FanoutEngine
import NIOConcurrencyHelpers
import Prometheus
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Fanout's metrics, served by `GET /metrics` in the Prometheus text format.
///
/// Most are swift-metrics handles in a swift-prometheus registry: batches shed, jobs and the job
/// store, upstream calls, the process. The two families every request touches (requests by
/// route, method and status with their durations; tasks by operation and status with their
/// durations) are counted in per-thread shards instead (``HotCounters``) and summed when
/// scraped: through shared handles, two event loops contended for the same locks and counters
/// on every request, which cost w1 about 7% of its responder CPU (bench/regression.py). Gauges
/// that mirror state kept elsewhere (requests and connections open, batches and jobs in flight,
/// the process's memory and descriptors) are read when scraped.
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

    private let hot = HotCounters(requestBuckets: ServiceMetrics.requestBuckets, taskBuckets: ServiceMetrics.taskBuckets)
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
    enum Route: String, Sendable, CaseIterable {
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
        hot.requestAnswered(route: Route(path: path), method: Self.methodIndex(method), status: status, duration: duration)
    }

    /// Counts the one task of a direct operation call (`POST /ops/{name}`).
    func taskFinished(operation: String, status: TaskStatus, duration: Duration) {
        var tally = HotCounters.TaskTally()
        tally.add(status, nanoseconds: duration.wholeNanoseconds, bounds: hot.taskBounds)
        hot.tasksFinished(operation: operation, tally)
    }

    /// Counts a batch refused for load: `overloaded` (503), `draining` (503) or `client_limit` (429).
    func batchShed(_ reason: String) {
        shed[reason]?.increment()
    }

    /// Counts the tasks of a finished batch by operation and status, and observes the duration of
    /// each task that ran: tallied here without a lock, added to this thread's shard once per
    /// operation.
    public func batchFinished(_ batch: Batch, _ result: BatchResult) {
        var lastOperation = 0
        var tally = HotCounters.TaskTally()
        // By index, reading fields in place: copying each task out (as `zip` does) retains and
        // releases everything it holds, which cost more than the counting.
        for index in batch.tasks.indices {
            let operation = batch.operationNumber(of: index)
            if operation != lastOperation {
                if !tally.isEmpty { hot.tasksFinished(operation: batch.operationNames[lastOperation], tally) }
                tally = HotCounters.TaskTally()
                lastOperation = operation
            }
            tally.add(result.status(at: index), nanoseconds: result.nanoseconds(at: index), bounds: hot.taskBounds)
        }
        if !tally.isEmpty { hot.tasksFinished(operation: batch.operationNames[lastOperation], tally) }
    }

    /// The label values of methods, by ``methodIndex(_:)``.
    static let methodLabels = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"]

    /// The method's index in ``methodLabels``; `other` for one Fanout never serves, since clients
    /// choose methods freely.
    static func methodIndex(_ method: String) -> Int {
        methodLabels.firstIndex(of: method) ?? methodLabels.count - 1
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
        hot.emit(into: &buffer)
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

/// Request and task counts with their duration histograms, in one shard per thread: each
/// thread adds to its own shard under that shard's lock, which no other thread takes except a
/// scrape; a scrape sums the shards.
final class HotCounters: Sendable {
    let requestBuckets: [Duration]
    let taskBuckets: [Duration]
    /// The same bounds in nanoseconds: comparing `Duration`s went through the standard
    /// library's 128-bit arithmetic, a few calls per task.
    let requestBounds: [Int64]
    let taskBounds: [Int64]
    private let shards: [Shard]

    init(requestBuckets: [Duration], taskBuckets: [Duration]) {
        precondition(requestBuckets.count < 17 && taskBuckets.count < 17)
        self.requestBuckets = requestBuckets
        self.taskBuckets = taskBuckets
        requestBounds = requestBuckets.map(\.wholeNanoseconds)
        taskBounds = taskBuckets.map(\.wholeNanoseconds)
        shards = (0..<Self.shardCount).map { _ in Shard() }
    }

    /// Threads beyond this share shards (correctly: a shard has a lock).
    static let shardCount = 32

    /// One histogram's observations: per bucket (not cumulative; the last is `+Inf`), sum, count.
    struct Histogram {
        var buckets = InlineArray<17, Int>(repeating: 0)
        /// In nanoseconds.
        var sum: Int64 = 0
        var count = 0

        mutating func observe(nanoseconds: Int64, bounds: [Int64]) {
            var index = 0
            while index < bounds.count, nanoseconds > bounds[index] { index += 1 }
            buckets[index] += 1
            sum &+= nanoseconds
            count += 1
        }

        mutating func add(_ other: Histogram) {
            for index in 0..<17 { buckets[index] += other.buckets[index] }
            sum += other.sum
            count += other.count
        }
    }

    /// The tasks of one operation in one batch, counted before they reach a shard.
    struct TaskTally {
        var statuses = BatchResult.Summary()
        var durations = Histogram()

        var isEmpty: Bool { statuses == BatchResult.Summary() }

        mutating func add(_ status: TaskStatus, nanoseconds: Int64, bounds: [Int64]) {
            statuses.add(status)
            if nanoseconds > 0 { durations.observe(nanoseconds: nanoseconds, bounds: bounds) }
        }
    }

    private struct RequestCell {
        var count = 0
        var durations = Histogram()

        mutating func add(_ duration: Duration, bounds: [Int64]) {
            count += 1
            durations.observe(nanoseconds: duration.wholeNanoseconds, bounds: bounds)
        }
    }

    private struct TaskCell {
        var statuses = BatchResult.Summary()
        var durations = Histogram()

        mutating func add(_ statuses: BatchResult.Summary, _ durations: Histogram) {
            self.statuses.add(statuses)
            self.durations.add(durations)
        }
    }

    // @unchecked: its fields are touched only under `lock`.
    private final class Shard: @unchecked Sendable {
        let lock = NIOLock()
        /// By ``requestKey(_:_:_:)``.
        var requests: [Int: RequestCell] = [:]
        var tasks: [String: TaskCell] = [:]
    }

    private var shard: Shard { shards[ThreadSlot.current % Self.shardCount] }

    private static func requestKey(_ route: Int, _ method: Int, _ status: Int) -> Int {
        (route * 16 + method) * 1000 + status
    }

    func requestAnswered(route: ServiceMetrics.Route, method: Int, status: Int, duration: Duration) {
        let routeIndex = ServiceMetrics.Route.allCases.firstIndex(of: route)!
        let key = Self.requestKey(routeIndex, method, min(max(status, 0), 999))
        let shard = shard
        shard.lock.withLockVoid { shard.requests[key, default: RequestCell()].add(duration, bounds: requestBounds) }
    }

    func tasksFinished(operation: String, _ tally: TaskTally) {
        let shard = shard
        shard.lock.withLockVoid {
            shard.tasks[operation, default: TaskCell()].add(tally.statuses, tally.durations)
        }
    }

    /// The four families, each series summed over the shards, in a stable order.
    func emit(into buffer: inout [UInt8]) {
        var requests: [Int: RequestCell] = [:]
        var tasks: [String: TaskCell] = [:]
        for shard in shards {
            shard.lock.withLockVoid {
                for (key, cell) in shard.requests {
                    requests[key, default: RequestCell()].count += cell.count
                    requests[key]!.durations.add(cell.durations)
                }
                for (operation, cell) in shard.tasks {
                    tasks[operation, default: TaskCell()].add(cell.statuses, cell.durations)
                }
            }
        }
        var text = ""
        let requestLabels = requests.keys.sorted().map { key -> (Int, String) in
            let status = key % 1000
            let method = (key / 1000) % 16
            let route = ServiceMetrics.Route.allCases[key / 16000]
            return (key, #"route="\#(route.rawValue)",method="\#(ServiceMetrics.methodLabels[method])",status="\#(status)""#)
        }
        if !requestLabels.isEmpty {
            text += "# TYPE fanout_http_requests_total counter\n"
            for (key, labels) in requestLabels { text += "fanout_http_requests_total{\(labels)} \(requests[key]!.count)\n" }
            text += "# TYPE fanout_http_server_request_duration_seconds histogram\n"
            for (key, labels) in requestLabels {
                Self.write(
                    requests[key]!.durations, name: "fanout_http_server_request_duration_seconds", labels: labels,
                    bounds: requestBuckets, to: &text)
            }
        }
        let operations = tasks.keys.sorted()
        if !operations.isEmpty {
            text += "# TYPE fanout_tasks_total counter\n"
            for operation in operations {
                for status in [TaskStatus.succeeded, .failed, .skipped, .cancelled] {
                    text += #"fanout_tasks_total{operation="\#(operation)",status="\#(status.rawValue)"} "#
                    text += "\(tasks[operation]!.statuses.count(status))\n"
                }
            }
            text += "# TYPE fanout_task_duration_seconds histogram\n"
            for operation in operations {
                Self.write(
                    tasks[operation]!.durations, name: "fanout_task_duration_seconds",
                    labels: #"operation="\#(operation)""#, bounds: taskBuckets, to: &text)
            }
        }
        buffer.append(contentsOf: text.utf8)
    }

    /// A histogram's cumulative buckets, `+Inf`, `_sum` (seconds) and `_count`.
    private static func write(
        _ histogram: Histogram, name: String, labels: String, bounds: [Duration], to text: inout String
    ) {
        var cumulative = 0
        for (index, bound) in bounds.enumerated() {
            cumulative += histogram.buckets[index]
            text += "\(name)_bucket{\(labels),le=\"\(seconds(bound))\"} \(cumulative)\n"
        }
        text += "\(name)_bucket{\(labels),le=\"+Inf\"} \(histogram.count)\n"
        text += "\(name)_sum{\(labels)} \(seconds(.nanoseconds(histogram.sum)))\n"
        text += "\(name)_count{\(labels)} \(histogram.count)\n"
    }

    private static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(Double(seconds) + Double(attoseconds) / 1e18)
    }
}

/// A small number for the calling thread, the same for its whole life: which shard it uses.
enum ThreadSlot {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
    private static let next = Atomic<Int>(0)

    static var current: Int {
        // Stored as slot + 1: a null pointer means none yet.
        if let stored = pthread_getspecific(key) { return Int(bitPattern: stored) - 1 }
        let slot = next.wrappingAdd(1, ordering: .relaxed).oldValue
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: slot + 1))
        return slot
    }
}
