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

    /// How many tasks ended with `status`.
    public func count(_ status: TaskStatus) -> Int {
        results.reduce(0) { $0 + ($1.status == status ? 1 : 0) }
    }

    /// `succeeded` when every task succeeded, `failed` when none did, otherwise `partial`.
    public var status: Status {
        let succeeded = count(.succeeded)
        if succeeded == results.count { return .succeeded }
        return succeeded == 0 ? .failed : .partial
    }

    /// The response body: `{"status": …, "results": […], "summary": {…}}`.
    public func jsonBytes() -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: 128 + results.count * 96)
        writer.raw(#"{"status":""#)
        switch status {
        case .succeeded: writer.raw("succeeded")
        case .failed: writer.raw("failed")
        case .partial: writer.raw("partial")
        }
        writer.raw(#"","results":["#)
        for (index, result) in results.enumerated() {
            if index > 0 { writer.raw(",") }
            Self.write(result, to: &writer)
        }
        writer.raw("],")
        writeSummary(to: &writer)
        writer.raw("}")
        return writer.bytes
    }

    /// Writes `"summary":{…}`.
    func writeSummary(to writer: inout JSONWriter) {
        var counts = [0, 0, 0, 0]
        for result in results {
            switch result.status {
            case .succeeded: counts[0] += 1
            case .failed: counts[1] += 1
            case .skipped: counts[2] += 1
            case .cancelled: counts[3] += 1
            }
        }
        writer.raw(#""summary":{"total":"#)
        writer.integer(results.count)
        writer.raw(#","succeeded":"#)
        writer.integer(counts[0])
        writer.raw(#","failed":"#)
        writer.integer(counts[1])
        writer.raw(#","skipped":"#)
        writer.integer(counts[2])
        writer.raw(#","cancelled":"#)
        writer.integer(counts[3])
        writer.raw(#","duration_ms":"#)
        writer.milliseconds(duration)
        writer.raw("}")
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
            writer.raw(#","error":{"code":"#)
            writer.string(error.code)
            writer.raw(#","message":"#)
            writer.string(error.message)
            writer.raw("}")
        }
        writer.raw(#","duration_ms":"#)
        writer.milliseconds(result.duration)
        writer.raw("}")
    }
}
