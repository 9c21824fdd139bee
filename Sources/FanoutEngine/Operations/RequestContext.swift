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
    /// The trace the request's sub-requests belong to; `nil` for none (a stored job whose request
    /// is gone starts one per call).
    public var trace: TraceContext?

    /// Creates a context.
    public init(requestID: String? = nil, headers: [String: String] = [:], trace: TraceContext? = nil) {
        self.requestID = requestID
        self.headers = headers
        self.trace = trace
    }

    /// No request: a batch run without one (tests, or a stored job whose headers are gone).
    public static let none = RequestContext()
}
