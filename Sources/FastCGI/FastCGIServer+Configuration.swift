extension FastCGIServer {
    /// Where the transport listens and how much it takes on. Every field has a default.
    public struct Configuration: Sendable {
        /// The listening socket.
        public enum Listener: Sendable, Equatable {
            /// Descriptor 0, as spawn-fcgi hands it over.
            case inherited
            /// A Unix socket at `path`, created with permission bits `mode`.
            case unixSocket(path: String, mode: UInt32)
            /// A TCP socket on an IPv4 `host` and `port`.
            case tcp(host: String, port: Int)
        }

        /// Where to listen when descriptor 0 is not a listening socket; `nil` requires one.
        public var listener: Listener? = nil
        /// Whether a TCP listener may bind an address outside 127.0.0.0/8. The FastCGI socket
        /// must not be reachable from other machines.
        public var allowNonLoopback = false
        /// Event loops: threads of our own that do libfcgi's blocking reads and writes and run the
        /// handlers' tasks. One per core is right unless handlers do long CPU-bound work.
        public var ioThreads = 2
        /// The most connections open at once; past it, new connections wait in the listen backlog.
        ///
        /// Above the service's batches in flight (1024 by default), so that a connection past
        /// that limit is accepted and answered 503 at once instead of waiting in the backlog (where
        /// nginx's connect fails with EAGAIN once it is full: a 502). libfcgi's only `select()` on
        /// a connection, in its lingering close, is never reached (see `FastCGIConnection`), so
        /// descriptors above 1023 are safe; the process's descriptor limit is the bound.
        public var maximumConnections = 4096
        /// Bodies larger than this are discarded and reported as too large.
        public var maximumBodyBytes = 8 * 1024 * 1024
        /// The listen backlog for sockets the server creates.
        public var backlog: Int32 = 1024
        /// Called on an event loop's thread each time it is about to wait with nothing to do:
        /// the moment to write out what the thread gathered while it was busy (log lines). It
        /// returns how long the loop may wait before calling it again, or `nil` for as long as
        /// no event comes.
        public var whenIdle: @Sendable () -> Duration? = { nil }

        /// The default configuration.
        public init() {}
    }
}
