/// A configuration of upstreams that cannot be used, naming the upstream and the problem.
public struct UpstreamConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The upstream concerned, or `nil` for the configuration as a whole.
    public var upstream: String?
    /// What is wrong.
    public var message: String

    /// A problem without its upstream yet.
    public struct Reason: Error, Sendable, Equatable {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    public init(upstream: String?, _ message: String) {
        self.upstream = upstream
        self.message = message
    }

    public var description: String {
        upstream.map { "upstream '\($0)': \(message)" } ?? message
    }
}
