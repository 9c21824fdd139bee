import AsyncHTTPClient
import NIOCore
import NIOPosix

/// The one HTTP client every `http` task uses: a connection pool per upstream host on event loops
/// of its own (never the FastCGI event loops), and a limit on calls in flight per upstream.
///
/// Create it at start-up and shut it down once, after the last batch.
public final class UpstreamClient: Sendable {
    /// The configured upstreams by name.
    let endpoints: [String: Endpoint]
    let client: HTTPClient
    let group: MultiThreadedEventLoopGroup

    /// One upstream and the slots for its calls.
    final class Endpoint: Sendable {
        let upstream: Upstream
        let limiter: ConnectionLimiter

        init(_ upstream: Upstream) {
            self.upstream = upstream
            limiter = ConnectionLimiter(limit: upstream.maximumConnections)
        }
    }

    /// Creates the client for `upstreams`.
    ///
    /// - Parameter threads: event loops for the upstream connections.
    public init(upstreams: [Upstream], threads: Int = 2) {
        endpoints = Dictionary(upstreams.map { ($0.name, Endpoint($0)) }, uniquingKeysWith: { $1 })
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5)))
        // The pool is per host; the limit per upstream is the limiter's.
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: upstreams.map(\.maximumConnections).max() ?? 8)
        // A refused connection fails the attempt at once; the retry policy decides what follows.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        // No tracer: AsyncHTTPClient otherwise starts a (no-op) span per request, and casting the
        // tracer for it was 5% of a call's cost.
        configuration.tracing.tracer = nil
        client = HTTPClient(eventLoopGroup: group, configuration: configuration)
    }

    /// The names of the configured upstreams, sorted.
    public var upstreamNames: [String] { endpoints.keys.sorted() }

    /// Closes every connection and stops the event loops. Call it once, when no call runs.
    public func shutdown() async {
        try? await client.shutdown()
        try? await group.shutdownGracefully()
    }
}
