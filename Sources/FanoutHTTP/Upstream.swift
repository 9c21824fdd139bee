import FanoutEngine

/// An API the operator lets batches call: a name clients use, a base URL they never see, and the
/// policy for calls to it.
public struct Upstream: Sendable {
    /// The name tasks give in `upstream`.
    public var name: String
    /// Where calls go: `path` is appended to it and must stay under it.
    public var baseURL: BaseURL
    /// The methods allowed (upper case); `nil` allows every method Fanout supports.
    public var methods: Set<String>?
    /// Paths (under the base URL) that calls must stay under; empty allows any.
    public var pathPrefixes: [String] = []
    /// Headers of the batch request copied to every call (lower case), such as `authorization`.
    public var forwardHeaders: [String] = []
    /// Headers added to every call, such as an API key.
    public var headers: [(name: String, value: String)] = []
    /// The most calls in flight at once; more wait for a free connection.
    public var maximumConnections = 64
    /// The longest one attempt may take, response body included.
    public var timeout: Duration = .seconds(10)
    /// Attempts per call, retries included (1–5).
    public var maximumAttempts = 3
    /// The largest response body read; past it the call fails with `response_too_large`.
    public var maximumResponseBytes = 1024 * 1024

    /// An upstream with the default policy.
    public init(name: String, baseURL: BaseURL) {
        self.name = name
        self.baseURL = baseURL
    }

    /// The methods Fanout sends.
    public static let supportedMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    /// The most attempts any upstream or task may ask for.
    public static let attemptLimit = 5
}

/// An upstream's base URL, taken apart: `http://127.0.0.1:9000/v1`.
public struct BaseURL: Sendable, Equatable, CustomStringConvertible {
    /// `http` or `https`.
    public var scheme: String
    /// The host name or address (an IPv6 address without brackets).
    public var host: String
    /// The port, explicit or the scheme's default.
    public var port: Int
    /// The path, without a trailing `/` (empty for the root).
    public var path: String

    /// Parses an absolute `http` or `https` URL without user information, query or fragment.
    ///
    /// - Throws: a message saying what is wrong.
    public init(parsing text: String) throws(UpstreamConfigurationError.Reason) {
        let lowered = text.lowercased()
        if lowered.hasPrefix("http://") {
            scheme = "http"
        } else if lowered.hasPrefix("https://") {
            scheme = "https"
        } else {
            throw .init("url must start with http:// or https://, not '\(text)'")
        }
        let rest = text.dropFirst(scheme.count + 3)
        if rest.contains(where: { $0 == "?" || $0 == "#" }) {
            throw .init("url must not have a query or fragment: '\(text)'")
        }
        if rest.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F || $0 == "\\" }) {
            throw .init("url must not contain spaces, control characters or '\\': '\(text)'")
        }
        let authority = rest.prefix { $0 != "/" }
        if authority.contains("@") { throw .init("url must not contain user information: '\(text)'") }
        var path = String(rest.dropFirst(authority.count))
        while path.hasSuffix("/") { path.removeLast() }
        if path.contains("//") || path.split(separator: "/").contains(where: { $0 == "." || $0 == ".." }) {
            throw .init("url path must not contain '//', '.' or '..' segments: '\(text)'")
        }
        self.path = path
        var hostPart = Substring(authority)
        var portPart: Substring?
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw .init("url has an unclosed '[': '\(text)'") }
            let after = hostPart[hostPart.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .init("url has a malformed host: '\(text)'") }
                portPart = after.dropFirst()
            }
            hostPart = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
        } else if let colon = hostPart.lastIndex(of: ":") {
            portPart = hostPart[hostPart.index(after: colon)...]
            hostPart = hostPart[..<colon]
        }
        guard !hostPart.isEmpty else { throw .init("url has no host: '\(text)'") }
        host = String(hostPart)
        if let portPart {
            guard let port = Int(portPart), (1...65535).contains(port) else {
                throw .init("url has an invalid port: '\(text)'")
            }
            self.port = port
        } else {
            port = scheme == "https" ? 443 : 80
        }
    }

    /// The URL for `path` (already encoded, starting with `/`) and an encoded query.
    func url(path: String, query: String) -> String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "\(scheme)://\(host):\(port)\(self.path)\(path)" + (query.isEmpty ? "" : "?" + query)
    }

    public var description: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "\(scheme)://\(host):\(port)\(path)"
    }
}
