/// One request received over FastCGI: its CGI parameters and its body.
public struct FastCGIRequest: Sendable {
    /// The CGI parameters nginx sent (`REQUEST_METHOD`, `DOCUMENT_URI`, `HTTP_*` headers, …).
    public var parameters: FastCGIParameters
    /// The request body, complete, unless it was larger than the configured limit.
    public let body: [UInt8]
    /// Whether the body exceeded the configured limit (and was discarded).
    public let bodyTooLarge: Bool
    /// When the request was read.
    public let receivedAt: ContinuousClock.Instant

    /// Creates a request; the transport does this.
    public init(
        parameters: FastCGIParameters, body: [UInt8] = [], bodyTooLarge: Bool = false,
        receivedAt: ContinuousClock.Instant = .now
    ) {
        self.parameters = parameters
        self.body = body
        self.bodyTooLarge = bodyTooLarge
        self.receivedAt = receivedAt
    }

    /// Creates a request from parameters by name (tests, and requests built by hand).
    public init(
        parameters: [String: String], body: [UInt8] = [], bodyTooLarge: Bool = false,
        receivedAt: ContinuousClock.Instant = .now
    ) {
        self.init(
            parameters: FastCGIParameters(parameters), body: body, bodyTooLarge: bodyTooLarge, receivedAt: receivedAt)
    }

    /// The HTTP method, `GET` if nginx sent none.
    public var method: String { parameters["REQUEST_METHOD"] ?? "GET" }

    /// The normalised request path, without the query string.
    public var path: String {
        if let uri = parameters["DOCUMENT_URI"], !uri.isEmpty { return uri }
        let uri = parameters["REQUEST_URI"] ?? "/"
        return uri.firstIndex(of: "?").map { String(uri[..<$0]) } ?? uri
    }

    /// The `Content-Type` header, if any.
    public var contentType: String? {
        parameters["CONTENT_TYPE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// A request header by name (`"Accept"`, `"Prefer"`), as nginx passed it.
    public func header(_ name: String) -> String? {
        parameters.header(name)
    }
}
