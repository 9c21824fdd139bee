import FanoutEngine
import Logging

extension FanoutService {
    /// What the HTTP service accepts and how it sheds load. Every field has a default.
    public struct Configuration: Sendable {
        /// Limits on batches and tasks.
        public var limits = EngineLimits()
        /// The largest request body, in bytes; must match the transport's and nginx's limit.
        public var maximumBodyBytes = 8 * 1024 * 1024
        /// The most batches (and direct operation calls) running at once; past it, 503.
        public var maximumBatchesInFlight = 1024
        /// The `Retry-After` value, in seconds, of a 503 answer.
        public var retryAfterSeconds = 1
        /// The FastCGI parameter that carries the client's identity, set by nginx (never from a
        /// header the client controls). `nil` (the default): one tenant, clients not kept apart.
        public var clientIdentityParameter: String?
        /// With clients kept apart: the most batches (and direct operation calls) one client may
        /// have running at once; past it, 429.
        public var maximumBatchesInFlightPerClient = 64
        /// Writes each request's log line in place of `logger.info("request", metadata: …)`,
        /// which builds a metadata dictionary for every request; called only when the logger
        /// lets `info` through. `nil` (the default): the line goes through the logger.
        public var requestLog: (@Sendable (RequestLogRecord) -> Void)?

        /// The default configuration.
        public init() {}
    }
}

/// One answered request, as its log line records it (`msg=request`).
public struct RequestLogRecord: Sendable {
    public var method: String
    public var path: String
    public var status: Int
    /// The tasks of the batch, 1 for a direct operation call, else 0.
    public var tasks: Int
    /// From reading the request to its answer (for a stream, to its last line).
    public var duration: Duration
    public var requestID: String
    /// Whether the answer was streamed.
    public var streamed: Bool

    public init(
        method: String, path: String, status: Int, tasks: Int, duration: Duration, requestID: String, streamed: Bool
    ) {
        self.method = method
        self.path = path
        self.status = status
        self.tasks = tasks
        self.duration = duration
        self.requestID = requestID
        self.streamed = streamed
    }

    /// The line's members as swift-log metadata, every value a string: `method`, `path`,
    /// `status`, `tasks`, `duration_ms` (milliseconds, three decimals), `request_id`, and
    /// `streamed` (`true`) for a stream.
    public var metadata: Logger.Metadata {
        var metadata: Logger.Metadata = [
            "method": .string(method), "path": .string(path), "status": .string(String(status)),
            "tasks": .string(String(tasks)), "duration_ms": .string(FanoutService.milliseconds(duration)),
            "request_id": .string(requestID),
        ]
        if streamed { metadata["streamed"] = "true" }
        return metadata
    }
}
