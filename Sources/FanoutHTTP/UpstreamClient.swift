import AsyncHTTPClient
import CoreMetrics
import Metrics
import NIOConcurrencyHelpers
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

    /// One upstream, the slots for its calls, and its metrics.
    final class Endpoint: Sendable {
        let upstream: Upstream
        let limiter: ConnectionLimiter
        let retries: CoreMetrics.Counter
        let duration: CoreMetrics.Timer
        private let factory: any MetricsFactory
        /// `fanout_upstream_requests_total` by outcome: a status code, or how the attempt failed.
        private let outcomes = NIOLockedValueBox<[String: CoreMetrics.Counter]>([:])

        init(_ upstream: Upstream, factory: any MetricsFactory) {
            self.upstream = upstream
            self.factory = factory
            limiter = ConnectionLimiter(limit: upstream.maximumConnections)
            retries = CoreMetrics.Counter(
                label: "fanout_upstream_retries_total", dimensions: [("upstream", upstream.name)], factory: factory)
            duration = CoreMetrics.Timer(
                label: "fanout_upstream_request_duration_seconds", dimensions: [("upstream", upstream.name)],
                factory: factory)
        }

        /// Counts one attempt that ended with `outcome` after `elapsed`.
        func attemptEnded(_ outcome: String, after elapsed: Duration) {
            duration.record(duration: elapsed)
            let counter =
                outcomes.withLockedValue { $0[outcome] }
                ?? outcomes.withLockedValue { outcomes in
                    if let existing = outcomes[outcome] { return existing }
                    let made = CoreMetrics.Counter(
                        label: "fanout_upstream_requests_total",
                        dimensions: [("upstream", upstream.name), ("status", outcome)], factory: factory)
                    outcomes[outcome] = made
                    return made
                }
            counter.increment()
        }
    }

    /// Creates the client for `upstreams`.
    ///
    /// - Parameters:
    ///   - threads: event loops for the upstream connections.
    ///   - metricsFactory: where calls, retries and their durations are counted, by upstream.
    public init(upstreams: [Upstream], threads: Int = 2, metricsFactory: any MetricsFactory = NOOPMetricsHandler.instance) {
        endpoints = Dictionary(
            upstreams.map { ($0.name, Endpoint($0, factory: metricsFactory)) }, uniquingKeysWith: { $1 })
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
