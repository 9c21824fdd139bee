import Crypto
import FanoutEngine

#if canImport(Glibc)
    import Glibc
#endif

/// Where an asynchronous batch is in its life.
public enum JobStatus: String, Sendable {
    /// Accepted, waiting for a responder to run it.
    case queued
    /// A responder is running it.
    case running
    /// Finished: every task succeeded.
    case succeeded
    /// Finished: some tasks succeeded and some did not.
    case partial
    /// Finished: no task succeeded, or the job itself failed (see ``Job/error``).
    case failed
    /// Cancelled by `DELETE` before it finished; results of finished tasks are kept.
    case cancelled

    /// Whether the job has ended and its results are final.
    public var isFinished: Bool {
        switch self {
        case .queued, .running: false
        case .succeeded, .partial, .failed, .cancelled: true
        }
    }

    init(_ status: BatchResult.Status) {
        switch status {
        case .succeeded: self = .succeeded
        case .partial: self = .partial
        case .failed: self = .failed
        }
    }
}

/// An asynchronous batch as stored: its state, progress and, once finished, its results.
public struct Job: Sendable {
    /// The unguessable id clients use in `/batch/{id}`.
    public let id: String
    public var status: JobStatus
    /// How many tasks the batch has.
    public var taskCount: Int
    /// Tasks finished so far, by status.
    public var progress: BatchResult.Summary
    /// Seconds since 1970.
    public var createdAt: Double
    public var startedAt: Double?
    public var finishedAt: Double?
    /// When a finished job is removed.
    public var expiresAt: Double?
    /// Whether a `DELETE` asked for the job to stop.
    public var cancelRequested: Bool
    /// The stored `results` array (JSON), once finished.
    public var results: [UInt8]?
    /// The stored `summary` object (JSON), once finished.
    public var summary: [UInt8]?
    /// Why the job itself failed (`interrupted`, `result_too_large`, …), if it did.
    public var error: TaskError?
    /// The id of the request that submitted the job (its `X-Request-Id`), when known.
    public var requestID: String? = nil

    /// The document `GET /batch/{id}` answers with.
    ///
    /// `{"id", "status", "request_id", "created_at", "started_at", "finished_at", "expires_at",
    /// "cancel_requested", "progress": {total, succeeded, failed, skipped, cancelled, pending},
    /// and once finished "results" and "summary", and "error" when the job itself failed}`.
    public func jsonBytes() -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: 320 + (results?.count ?? 0) + (summary?.count ?? 0))
        writer.raw(#"{"id":"#)
        writer.string(id)
        writer.raw(#","status":"#)
        writer.string(status.rawValue)
        writer.raw(#","request_id":"#)
        if let requestID { writer.string(requestID) } else { writer.raw("null") }
        writer.raw(#","created_at":"#)
        Self.writeTime(createdAt, to: &writer)
        writer.raw(#","started_at":"#)
        Self.writeTime(startedAt, to: &writer)
        writer.raw(#","finished_at":"#)
        Self.writeTime(finishedAt, to: &writer)
        writer.raw(#","expires_at":"#)
        Self.writeTime(expiresAt, to: &writer)
        writer.raw(#","cancel_requested":"#)
        writer.raw(cancelRequested ? "true" : "false")
        writer.raw(#","progress":{"total":"#)
        writer.integer(taskCount)
        writer.raw(",")
        progress.writeCounts(to: &writer)
        writer.raw(#","pending":"#)
        writer.integer(
            max(0, taskCount - progress.succeeded - progress.failed - progress.skipped - progress.cancelled))
        writer.raw("}")
        if let results {
            writer.raw(#","results":"#)
            writer.trustedJSON(results)
        }
        if let summary {
            writer.raw(#","summary":"#)
            writer.trustedJSON(summary)
        }
        if let error {
            writer.raw(#","error":"#)
            error.write(to: &writer)
        }
        writer.raw("}")
        return writer.bytes
    }

    /// An RFC 3339 UTC time with milliseconds, or `null`.
    static func writeTime(_ seconds: Double?, to writer: inout JSONWriter) {
        guard let seconds else {
            writer.raw("null")
            return
        }
        var epoch = Int(seconds.rounded(.down))
        let milliseconds = Int(((seconds - Double(epoch)) * 1000).rounded(.down))
        var time = tm()
        gmtime_r(&epoch, &time)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let fraction = String(milliseconds + 1000).dropFirst()
        writer.string(
            "\(time.tm_year + 1900)-\(two(time.tm_mon + 1))-\(two(time.tm_mday))T"
                + "\(two(time.tm_hour)):\(two(time.tm_min)):\(two(time.tm_sec)).\(fraction)Z")
    }
}

extension Job {
    /// A fresh job id: 128 random bits in lowercase hex.
    public static func newID() -> String {
        randomHex(bytes: 16)
    }

    /// What an idempotency key's replay compares: the SHA-256 of the body, in hex.
    static func bodyHash(_ body: [UInt8]) -> String {
        SHA256.hash(data: body).map { String($0 >> 4, radix: 16) + String($0 & 0x0F, radix: 16) }.joined()
    }

    static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        var text = ""
        for _ in 0..<count {
            let byte = UInt8.random(in: 0...255, using: &generator)
            text += String(byte >> 4, radix: 16) + String(byte & 0x0F, radix: 16)
        }
        return text
    }
}
