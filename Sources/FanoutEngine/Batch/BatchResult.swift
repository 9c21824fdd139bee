/// The combined result of a batch: every task's result in request order, and a summary.
public struct BatchResult: Sendable {
    /// The overall outcome of a batch.
    public enum Status: String, Sendable {
        /// Every task succeeded.
        case succeeded
        /// No task succeeded.
        case failed
        /// Some tasks succeeded and some did not.
        case partial
    }

    /// One result per task, in request order.
    public let results: [TaskResult]
    /// How long the batch ran.
    public let duration: Duration

    /// How many tasks ended with each status.
    public struct Summary: Sendable, Equatable {
        public var succeeded = 0
        public var failed = 0
        public var skipped = 0
        public var cancelled = 0

        /// All zero.
        public init() {}

        /// Adds `other`'s counts to these.
        public mutating func add(_ other: Summary) {
            succeeded += other.succeeded
            failed += other.failed
            skipped += other.skipped
            cancelled += other.cancelled
        }

        /// Counts one more task that ended with `status`.
        public mutating func add(_ status: TaskStatus) {
            switch status {
            case .succeeded: succeeded += 1
            case .failed: failed += 1
            case .skipped: skipped += 1
            case .cancelled: cancelled += 1
            }
        }

        /// Writes `"succeeded":…,"failed":…,"skipped":…,"cancelled":…`.
        public func writeCounts(to writer: inout JSONWriter) {
            writer.raw(#""succeeded":"#)
            writer.integer(succeeded)
            writer.raw(#","failed":"#)
            writer.integer(failed)
            writer.raw(#","skipped":"#)
            writer.integer(skipped)
            writer.raw(#","cancelled":"#)
            writer.integer(cancelled)
        }

        /// How many tasks ended with `status`.
        public func count(_ status: TaskStatus) -> Int {
            switch status {
            case .succeeded: succeeded
            case .failed: failed
            case .skipped: skipped
            case .cancelled: cancelled
            }
        }
    }

    /// How many tasks ended with each status.
    public var summary: Summary {
        var summary = Summary()
        for index in results.indices { summary.add(results[index].status) }
        return summary
    }

    /// How many tasks ended with `status`.
    public func count(_ status: TaskStatus) -> Int {
        summary.count(status)
    }

    /// `succeeded` when every task succeeded, `failed` when none did, otherwise `partial`.
    public var status: Status {
        Self.status(of: summary, total: results.count)
    }

    private static func status(of summary: Summary, total: Int) -> Status {
        if summary.succeeded == total { return .succeeded }
        return summary.succeeded == 0 ? .failed : .partial
    }

    /// The response body: `{"status": …, "results": […], "summary": {…}}`.
    public func jsonBytes() -> [UInt8] {
        let summary = summary
        var writer = JSONWriter(reservingCapacity: 128 + results.count * 96)
        writer.raw(#"{"status":"#)
        writer.string(Self.status(of: summary, total: results.count).rawValue)
        writer.raw(#","results":"#)
        writeResults(to: &writer)
        writer.raw(#","summary":"#)
        writeSummary(summary, to: &writer)
        writer.raw("}")
        return writer.bytes
    }

    /// The `results` array alone: `[{…}, …]`, as an asynchronous job stores it.
    public func resultsJSONBytes() -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: 2 + results.count * 96)
        writeResults(to: &writer)
        return writer.bytes
    }

    /// The `summary` object alone: `{"total": …, …}`.
    public func summaryJSONObjectBytes() -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: 128)
        writeSummary(summary, to: &writer)
        return writer.bytes
    }

    /// A result in which every task of `batch` is cancelled with `error`, for a batch that never
    /// ran or whose run was lost.
    public static func allCancelled(_ batch: Batch, error: TaskError) -> BatchResult {
        BatchResult(
            results: batch.tasks.map { TaskResult(id: $0.id, status: .cancelled, error: error, duration: .zero) },
            duration: .zero)
    }

    /// The last line of a streamed batch: `{"status": …, "summary": {…}}`.
    public func summaryJSONBytes() -> [UInt8] {
        let summary = summary
        var writer = JSONWriter(reservingCapacity: 160)
        writer.raw(#"{"status":"#)
        writer.string(Self.status(of: summary, total: results.count).rawValue)
        writer.raw(#","summary":"#)
        writeSummary(summary, to: &writer)
        writer.raw("}")
        return writer.bytes
    }

    /// Writes the `results` array.
    private func writeResults(to writer: inout JSONWriter) {
        writer.raw("[")
        // Through the buffer, each result borrowed: iterating by value copied every result,
        // retaining and releasing what it holds.
        results.withUnsafeBufferPointer { results in
            for index in results.indices {
                if index > 0 { writer.raw(",") }
                Self.write(results[index], to: &writer)
            }
        }
        writer.raw("]")
    }

    /// Writes the `summary` object.
    private func writeSummary(_ summary: Summary, to writer: inout JSONWriter) {
        writer.raw(#"{"total":"#)
        writer.integer(results.count)
        writer.raw(",")
        summary.writeCounts(to: &writer)
        writer.raw(#","duration_ms":"#)
        writer.milliseconds(duration)
        writer.raw("}")
    }

    /// Appends each result's object, one per line (newline-delimited JSON).
    public static func ndjsonLines(_ results: [TaskResult]) -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: results.count * 96)
        results.withUnsafeBufferPointer { results in
            for index in results.indices {
                write(results[index], to: &writer)
                writer.raw("\n")
            }
        }
        return writer.bytes
    }

    /// Writes one task result object.
    static func write(_ result: TaskResult, to writer: inout JSONWriter) {
        writer.raw(#"{"id":"#)
        writer.string(result.id)
        switch result.status {
        case .succeeded: writer.raw(#","status":"succeeded","output":"#)
        case .failed: writer.raw(#","status":"failed""#)
        case .skipped: writer.raw(#","status":"skipped""#)
        case .cancelled: writer.raw(#","status":"cancelled""#)
        }
        if let output = result.output {
            writer.json(output)
        }
        if let error = result.error {
            writer.raw(#","error":"#)
            error.write(to: &writer)
        }
        writer.raw(#","duration_ms":"#)
        writer.milliseconds(result.duration)
        writer.raw("}")
    }
}
