/// Answers requests; the layer above the transport implements it.
public protocol FastCGIHandler: Sendable {
    /// Produces the response to `request`.
    ///
    /// Runs on Swift's concurrency pool. The task is cancelled when the client goes away or the
    /// server cancels in-flight work at shutdown.
    func handle(_ request: FastCGIRequest) async -> FastCGIResponse
}
