#if canImport(Glibc)
    import Glibc
#endif

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

    /// The tasks' ids.
    private let ids: TaskIDs
    /// Each task's status and running time, output and error, by position: kept by field
    /// rather than as an array of ``TaskResult``s, which cost each task a result built, copied
    /// into place and destroyed, with a retain and release of everything in it at every step.
    private let records: [TaskRecord]
    private let outputs: TaskOutputs
    /// The errors of the tasks that have one, by position.
    private let errors: [Int: TaskError]
    /// How long the batch ran.
    public let duration: Duration

    init(
        ids: TaskIDs, records: [TaskRecord], outputs: TaskOutputs, errors: [Int: TaskError], duration: Duration
    ) {
        self.ids = ids
        self.records = records
        self.outputs = outputs
        self.errors = errors
        self.duration = duration
    }

    /// How many tasks the batch had.
    public var count: Int { records.count }

    /// Task `index`'s result.
    public subscript(index: Int) -> TaskResult {
        TaskResult(
            id: ids[index], status: records[index].status, output: outputs[index], error: errors[index],
            duration: .nanoseconds(records[index].nanoseconds))
    }

    /// One result per task, in request order.
    public var results: [TaskResult] { records.indices.map { self[$0] } }

    /// How task `index` ended.
    public func status(at index: Int) -> TaskStatus { records[index].status }

    /// How long task `index` ran.
    public func duration(at index: Int) -> Duration { .nanoseconds(records[index].nanoseconds) }

    /// How long task `index` ran, in nanoseconds.
    public func nanoseconds(at index: Int) -> Int64 { records[index].nanoseconds }

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
        for record in records { summary.add(record.status) }
        return summary
    }

    /// How many tasks ended with `status`.
    public func count(_ status: TaskStatus) -> Int {
        summary.count(status)
    }

    /// `succeeded` when every task succeeded, `failed` when none did, otherwise `partial`.
    public var status: Status {
        Self.status(of: summary, total: count)
    }

    private static func status(of summary: Summary, total: Int) -> Status {
        if summary.succeeded == total { return .succeeded }
        return summary.succeeded == 0 ? .failed : .partial
    }

    /// The response body: `{"status": …, "results": […], "summary": {…}}`.
    public func jsonBytes() -> [UInt8] {
        jsonBytes(splittingFrom: Self.splitBytes)
    }

    /// ``jsonBytes()``, writing the results in two halves from `splitBytes` of them on (on any
    /// machine: halves run one after the other where there is one core).
    func jsonBytes(splittingFrom splitBytes: Int) -> [UInt8] {
        let summary = summary
        var tail = JSONWriter(reservingCapacity: 160)
        tail.raw(#","summary":"#)
        writeSummary(summary, to: &tail)
        tail.raw("}")
        let status = Self.status(of: summary, total: count).rawValue
        return writeResults(around: 24 + ByteCursor.stringBound(utf8Count: status.utf8.count), head: { cursor in
            cursor.raw(#"{"status":"#)
            cursor.string(status)
            cursor.raw(#","results":"#)
        }, tail: tail.bytes, splittingFrom: splitBytes)
    }

    /// The `results` array alone: `[{…}, …]`, as an asynchronous job stores it.
    public func resultsJSONBytes() -> [UInt8] {
        writeResults(around: 0, head: { _ in }, tail: [], splittingFrom: Self.splitBytes)
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
        let count = batch.tasks.count
        return BatchResult(
            ids: batch.ids, records: Array(repeating: TaskRecord(), count: count),
            outputs: TaskOutputs(count: count, body: []),
            errors: Dictionary(uniqueKeysWithValues: (0..<count).map { ($0, error) }), duration: .zero)
    }

    /// The last line of a streamed batch: `{"status": …, "summary": {…}}`.
    public func summaryJSONBytes() -> [UInt8] {
        let summary = summary
        var writer = JSONWriter(reservingCapacity: 160)
        writer.raw(#"{"status":"#)
        writer.string(Self.status(of: summary, total: count).rawValue)
        writer.raw(#","summary":"#)
        writeSummary(summary, to: &writer)
        writer.raw("}")
        return writer.bytes
    }

    /// The `results` array, after what `head` writes (at most `headBound` bytes) and before
    /// `tail`: written in one array made at its final size (see ``ByteCursor``).
    ///
    /// A long array is written in two halves at once (see ``TwoThreads``): the second half into
    /// its own stretch of the array, past the most the first can take, and then moved down to
    /// where the first half ended.
    private func writeResults(
        around headBound: Int, head: (inout ByteCursor) -> Void, tail: [UInt8], splittingFrom splitBytes: Int
    ) -> [UInt8] {
        // The most each half takes; written in one piece, the first takes it all.
        var split = records.count / 2
        var firstBound = 0
        var secondBound = 0
        for index in records.indices {
            let bound = 1 + Self.resultBound(idBound: ids.jsonBound(at: index), outputCount: outputs.byteCount(at: index))
            if index < split { firstBound += bound } else { secondBound += bound }
        }
        for (index, error) in errors {
            if index < split { firstBound += error.jsonBound } else { secondBound += error.jsonBound }
        }
        if records.count < 2 || firstBound + secondBound < splitBytes {
            split = records.count
            firstBound += secondBound
            secondBound = 0
        }
        let bound = headBound + 2 + tail.count + firstBound + secondBound
        return [UInt8](unsafeUninitializedCapacity: bound) { buffer, initialized in
            var cursor = ByteCursor(buffer)
            head(&cursor)
            cursor.byte(UInt8(ascii: "["))
            // In place, through the arrays' buffers: an output copied out to be written cost a
            // retain and release of what it holds.
            outputs.withBytes { outputs in
                if split == records.count {
                    writeResults(0..<split, outputs: outputs, to: &cursor)
                    return
                }
                let start = cursor.count
                let first = UnsafeMutableBufferPointer(rebasing: buffer[start..<start + firstBound])
                let second = UnsafeMutableBufferPointer(rebasing: buffer[start + firstBound..<start + firstBound + secondBound])
                var firstCount = 0
                var secondCount = 0
                // Each half writes only its own stretch and its own count.
                TwoThreads.run {
                    var cursor = ByteCursor(first)
                    writeResults(0..<split, outputs: outputs, to: &cursor)
                    firstCount = cursor.count
                } and: {
                    var cursor = ByteCursor(second)
                    writeResults(split..<records.count, outputs: outputs, to: &cursor)
                    secondCount = cursor.count
                }
                if firstCount < firstBound {
                    // The two stretches may overlap: memmove, not a copy.
                    memmove(first.baseAddress! + firstCount, second.baseAddress!, secondCount)
                }
                cursor.advance(by: firstCount + secondCount)
            }
            cursor.byte(UInt8(ascii: "]"))
            tail.withUnsafeBufferPointer { cursor.bytes($0) }
            initialized = cursor.count
        }
    }

    /// The results of the tasks in `range`, each after a comma but the very first.
    private func writeResults(_ range: Range<Int>, outputs: TaskOutputs.Reader, to cursor: inout ByteCursor) {
        for index in range {
            if index > 0 { cursor.byte(UInt8(ascii: ",")) }
            let status = records[index].status
            Self.writeResult(
                id: { ids.write(index, to: &$0) }, status: status,
                error: status == .succeeded ? nil : errors[index], nanoseconds: records[index].nanoseconds, to: &cursor
            ) { outputs.write(index, to: &$0) }
        }
    }

    /// From how many bytes of results on (at most; some 3,000 small results) they are written
    /// in two halves at once, on a machine with more than one core: below, waking the second
    /// thread (tens of microseconds) would cost about as much as it saves.
    static let splitBytes = TwoThreads.areAvailable ? 256 * 1024 : .max

    /// Writes the `summary` object.
    private func writeSummary(_ summary: Summary, to writer: inout JSONWriter) {
        writer.raw(#"{"total":"#)
        writer.integer(count)
        writer.raw(",")
        summary.writeCounts(to: &writer)
        writer.raw(#","duration_ms":"#)
        writer.milliseconds(duration)
        writer.raw("}")
    }

    /// Appends each result's object, one per line (newline-delimited JSON).
    public static func ndjsonLines(_ results: [TaskResult]) -> [UInt8] {
        var bound = 0
        for result in results { bound += 1 + resultBound(id: result.id, output: result.output, error: result.error) }
        return [UInt8](unsafeUninitializedCapacity: bound) { buffer, initialized in
            var cursor = ByteCursor(buffer)
            for result in results {
                writeResult(
                    id: { $0.string(result.id) }, status: result.status, error: result.error,
                    nanoseconds: result.duration.wholeNanoseconds, to: &cursor
                ) { if let output = result.output { $0.json(output) } }
                cursor.byte(UInt8(ascii: "\n"))
            }
            initialized = cursor.count
        }
    }

    /// The most ``writeResult(id:status:error:nanoseconds:to:output:)`` writes.
    private static func resultBound(id: String, output: RawJSON?, error: TaskError?) -> Int {
        resultBound(idBound: ByteCursor.stringBound(utf8Count: id.utf8.count), outputCount: output?.bytes.count ?? 0)
            + (error?.jsonBound ?? 0)
    }

    /// The same, without the error.
    private static func resultBound(idBound: Int, outputCount: Int) -> Int {
        96 + idBound + outputCount
    }

    /// Writes one task result object; `id` writes the id, and `output` the output, if there is one.
    @inline(__always)
    private static func writeResult(
        id: (inout ByteCursor) -> Void, status: TaskStatus, error: TaskError?, nanoseconds: Int64, to cursor: inout ByteCursor,
        output: (inout ByteCursor) -> Void
    ) {
        cursor.raw(#"{"id":"#)
        id(&cursor)
        switch status {
        case .succeeded: cursor.raw(#","status":"succeeded","output":"#)
        case .failed: cursor.raw(#","status":"failed""#)
        case .skipped: cursor.raw(#","status":"skipped""#)
        case .cancelled: cursor.raw(#","status":"cancelled""#)
        }
        output(&cursor)
        if let error {
            cursor.raw(#","error":"#)
            error.write(to: &cursor)
        }
        cursor.raw(#","duration_ms":"#)
        cursor.milliseconds(nanoseconds: nanoseconds)
        cursor.byte(UInt8(ascii: "}"))
    }
}

/// A task's status and running time, and whether it has them yet: side by side in one array,
/// where three arrays were three allocations (and three generic metadata look-ups) per batch.
struct TaskRecord {
    /// In nanoseconds.
    var nanoseconds: Int64 = 0
    var status = TaskStatus.cancelled
    /// Whether the task has ended (or will never run): only an execution in progress has
    /// records that are not.
    var isResolved = false
}
