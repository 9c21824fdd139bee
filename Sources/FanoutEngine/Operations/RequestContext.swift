/// What an operation may know about the request that carried its batch.
///
/// Operations see it while decoding their input (``Operation/decodeInput(_:context:)``); it holds
/// only the request headers some operation asked for (``Operation/requestHeaderNames``), so a
/// batch whose operations ask for none copies none.
public struct RequestContext: Sendable {
    /// The request's id (its `X-Request-Id`), when it has one.
    public var requestID: String?
    /// Request headers by lower-case name: only those some operation asked for and the request has.
    public var headers: [String: String]
    /// The client's `traceparent` and `tracestate` headers, as sent (checked where used: see
    /// ``TraceContext``).
    public var traceparent: String?
    public var tracestate: String?

    /// Creates a context.
    public init(
        requestID: String? = nil, headers: [String: String] = [:], traceparent: String? = nil,
        tracestate: String? = nil
    ) {
        self.requestID = requestID
        self.headers = headers
        self.traceparent = traceparent
        self.tracestate = tracestate
    }

    /// The trace context of one sub-request: a span of its own in the client's trace or the
    /// request's.
    public func traceForCall() -> TraceContext {
        TraceContext(continuing: traceparent, state: tracestate, requestID: requestID)
    }

    /// No request: a batch run without one (tests, or a stored job whose headers are gone).
    public static let none = RequestContext()
}
