import FanoutEngine

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

        /// The default configuration.
        public init() {}
    }
}
