/// A response: status, headers, and a body written whole or streamed.
public struct FastCGIResponse: Sendable {
    /// Writes a streamed body; see ``init(status:headers:stream:)``.
    public typealias Stream = @Sendable (FastCGIResponseWriter) async -> Void

    /// The HTTP status code.
    public var status: Int
    /// Response headers, in order. `Content-Length` is added by the transport for a whole body.
    public var headers: [(name: String, value: String)]
    /// The body, when it is written whole.
    public var body: [UInt8]
    /// Writes the body piece by piece, when it is streamed.
    public var stream: Stream?

    /// Creates a response with a whole body.
    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// Creates a response whose body `stream` writes after the head has been sent.
    ///
    /// The body has no `Content-Length`; nginx passes it on chunked. `stream` runs in the request's
    /// task, which is cancelled when the client goes away; once a write fails, later writes do
    /// nothing. The request ends when `stream` returns.
    public init(status: Int, headers: [(name: String, value: String)] = [], stream: @escaping Stream) {
        self.status = status
        self.headers = headers
        body = []
        self.stream = stream
    }

    /// The CGI response head: `Status:`, the headers and, for a whole body, `Content-Length`,
    /// then a blank line.
    func head() -> [UInt8] {
        // Bytes appended in place: interpolating a String and copying it out cost twice as much.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(128)
        bytes.append(contentsOf: "Status: ".utf8)
        Self.appendDecimal(status, to: &bytes)
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: HTTPStatus.reasonPhrase(status).utf8)
        bytes.append(contentsOf: [13, 10])
        for (name, value) in headers {
            bytes.append(contentsOf: name.utf8)
            bytes.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: " ")])
            bytes.append(contentsOf: value.utf8)
            bytes.append(contentsOf: [13, 10])
        }
        if stream == nil {
            bytes.append(contentsOf: "Content-Length: ".utf8)
            Self.appendDecimal(body.count, to: &bytes)
            bytes.append(contentsOf: [13, 10])
        }
        bytes.append(contentsOf: [13, 10])
        return bytes
    }

    private static func appendDecimal(_ value: Int, to bytes: inout [UInt8]) {
        if value >= 10 { appendDecimal(value / 10, to: &bytes) }
        bytes.append(UInt8(ascii: "0") + UInt8(value % 10))
    }
}

/// Writes the pieces of a streamed response body.
public struct FastCGIResponseWriter: Sendable {
    let send: @Sendable ([UInt8]) async -> Bool

    /// Creates a writer that hands each piece to `send`; the transport makes one per stream, and
    /// tests or other front ends may make their own.
    public init(_ send: @escaping @Sendable ([UInt8]) async -> Bool) {
        self.send = send
    }

    /// Writes `bytes` and flushes them to nginx at once.
    ///
    /// - Returns: `false` when the connection failed (the client went away); the bytes are lost.
    @discardableResult
    public func write(_ bytes: [UInt8]) async -> Bool {
        await send(bytes)
    }
}
