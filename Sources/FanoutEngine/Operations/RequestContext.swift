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

    /// Creates a context.
    public init(requestID: String? = nil, headers: [String: String] = [:]) {
        self.requestID = requestID
        self.headers = headers
    }

    /// No request: a batch run without one (tests, or a stored job whose headers are gone).
    public static let none = RequestContext()
}
