/// Answers requests; the layer above the transport implements it.
public protocol FastCGIHandler: Sendable {
    /// Answers `request`, on the transport's thread, as soon as it has been read.
    ///
    /// Return ``FastCGIAnswer/response(_:)`` only for work that is short and never blocks: the
    /// thread reads no other connection meanwhile. Anything that waits goes in
    /// ``FastCGIAnswer/task(_:)``.
    func answer(_ request: FastCGIRequest) -> FastCGIAnswer
}

/// What a handler makes of a request: its response at once, or work that produces it.
///
/// Most batches run start to end without waiting; answering them on the spot spares each a
/// task, its scheduling and its asynchronous calls (a tenth of a small request's cost).
public enum FastCGIAnswer: Sendable {
    /// The response, made without waiting.
    case response(FastCGIResponse)
    /// Work that waits (for a timer, an upstream, a store): run in a task that prefers the
    /// transport's thread, cancelled when the client goes away or at shutdown.
    case task(@Sendable () async -> FastCGIResponse)
}
