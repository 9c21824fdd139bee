/// A complete response: status, headers and body.
public struct FastCGIResponse: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// Response headers, in order. `Content-Length` is added by the transport.
    public var headers: [(name: String, value: String)]
    /// The body.
    public var body: [UInt8]

    /// Creates a response.
    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The CGI response head: `Status:`, the headers and `Content-Length`, then a blank line.
    func head() -> [UInt8] {
        var text = "Status: \(status) \(HTTPStatus.reasonPhrase(status))\r\n"
        for (name, value) in headers {
            text += "\(name): \(value)\r\n"
        }
        text += "Content-Length: \(body.count)\r\n\r\n"
        return Array(text.utf8)
    }
}
