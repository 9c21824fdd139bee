/// What a task may ask of an upstream: the checks on paths, placeholders, headers and queries,
/// and the encodings Fanout applies. Pure functions, so every hostile input can be tested alone.
public enum RequestRules {
    /// Headers that belong to the connection or its framing: never set by a task, an upstream's
    /// fixed headers or forwarding.
    public static let neverSent: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
        "content-length",
    ]

    /// Why a task may not set header `name` (lower case), or `nil` when it may.
    public static func problem(inTaskHeader name: String) -> String? {
        guard isToken(name) else { return "is not a valid header name" }
        if neverSent.contains(name) { return "is set by Fanout's HTTP connection, not by a task" }
        if name == "authorization" || name == "cookie" {
            return "carries credentials: only the upstream's forward_headers or fixed headers may send it"
        }
        if name.hasPrefix("proxy-") { return "is a proxy header and cannot be set by a task" }
        if name.hasPrefix("x-forwarded-") || name == "forwarded" { return "is set by proxies, not by a task" }
        if name == "x-request-id" { return "is set by Fanout to the batch request's id" }
        if name == "traceparent" || name == "tracestate" {
            return "is set by Fanout from the batch request's trace context"
        }
        if name == "idempotency-key" { return "is set from the task's idempotency_key" }
        return nil
    }

    /// Why `path` cannot be sent, or `nil` when it can: it must start with `/` and contain only
    /// characters allowed in a URL path, with no `//`, `\`, `@`, `?`, `#`, dot segments, control
    /// characters, or percent-encoded `.`, `/`, `\`, `%` or control characters.
    ///
    /// - Parameter allowPlaceholders: whether `{name}` placeholders may appear.
    public static func problem(inPath path: String, allowPlaceholders: Bool) -> String? {
        let bytes = Array(path.utf8)
        guard bytes.first == UInt8(ascii: "/") else { return "must start with '/' (a path under the upstream's URL)" }
        if path.contains("//") { return "must not contain '//'" }
        var index = 0
        var inPlaceholder = false
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case 0x00..<0x20, 0x7F: return "must not contain control characters"
            case UInt8(ascii: "\\"): return "must not contain '\\'"
            case UInt8(ascii: "@"): return "must not contain '@'"
            case UInt8(ascii: "?"), UInt8(ascii: "#"): return "must not contain '?' or '#': use \"query\" for the query"
            case UInt8(ascii: "{"):
                guard allowPlaceholders else { return "must not contain '{'" }
                if inPlaceholder { return "has a '{' inside a placeholder" }
                inPlaceholder = true
            case UInt8(ascii: "}"):
                guard allowPlaceholders, inPlaceholder else { return "has a '}' without its '{'" }
                inPlaceholder = false
            case UInt8(ascii: "%"):
                guard index + 2 < bytes.count, let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2])
                else { return "has a '%' that is not followed by two hex digits" }
                let decoded = high << 4 | low
                if decoded < 0x20 || decoded == 0x7F || decoded == UInt8(ascii: ".") || decoded == UInt8(ascii: "/")
                    || decoded == UInt8(ascii: "\\") || decoded == UInt8(ascii: "%")
                {
                    return "must not percent-encode '.', '/', '\\', '%' or control characters"
                }
                index += 2
            default:
                if inPlaceholder {
                    guard isPlaceholderCharacter(byte) else {
                        return "placeholder names may contain only letters, digits and '_'"
                    }
                } else if !isPathCharacter(byte) {
                    return "must percent-encode '\(String(decoding: [byte], as: UTF8.self))' and any non-ASCII character"
                }
            }
            index += 1
        }
        if inPlaceholder { return "has a '{' without its '}'" }
        for segment in path.split(separator: "/", omittingEmptySubsequences: false) where segment == "." || segment == ".." {
            return "must not contain '.' or '..' segments"
        }
        if path.contains("{}") { return "has an empty placeholder '{}'" }
        return nil
    }

    /// The `{name}` placeholders of a valid path, in order.
    public static func placeholders(in path: String) -> [String] {
        var names: [String] = []
        var current: String?
        for character in path {
            if character == "{" {
                current = ""
            } else if character == "}" {
                if let name = current { names.append(name) }
                current = nil
            } else if current != nil {
                current!.append(character)
            }
        }
        return names
    }

    /// Why a placeholder value cannot be used, or `nil`: it must not be empty, nor `.`/`..` or
    /// contain such a segment (an upstream that decodes `%2F` would otherwise climb out of its path).
    public static func problem(inParameterValue value: String) -> String? {
        if value.isEmpty { return "must not be empty" }
        let parts = value.split(omittingEmptySubsequences: false) { $0 == "/" || $0 == "\\" }
        if parts.contains(where: { $0 == "." || $0 == ".." }) { return "must not be '.' or '..', nor contain such a segment" }
        return nil
    }

    /// `path` with each `{name}` replaced by its value, percent-encoded as one segment.
    public static func fill(_ path: String, parameters: [String: String]) -> String {
        var result = ""
        var name: String?
        for character in path {
            if character == "{" {
                name = ""
            } else if character == "}", let current = name {
                result += percentEncoded(parameters[current] ?? "")
                name = nil
            } else if name != nil {
                name!.append(character)
            } else {
                result.append(character)
            }
        }
        return result
    }

    /// Whether `path` lies under one of `prefixes` (every path does when there are none).
    public static func isUnder(_ path: String, prefixes: [String]) -> Bool {
        prefixes.isEmpty
            || prefixes.contains { prefix in prefix == "/" || path == prefix || path.hasPrefix(prefix + "/") }
    }

    /// Whether a path whose text up to its first placeholder is `start` can still end up under
    /// one of `prefixes`.
    public static func canBeUnder(start: String, prefixes: [String]) -> Bool {
        prefixes.isEmpty
            || prefixes.contains { prefix in
                prefix == "/" || start == prefix || start.hasPrefix(prefix + "/") || (prefix + "/").hasPrefix(start)
            }
    }

    /// `text` with every byte but the unreserved ones (`A–Z a–z 0–9 - . _ ~`) percent-encoded.
    public static func percentEncoded(_ text: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if isUnreserved(byte) {
                bytes.append(byte)
            } else {
                bytes.append(UInt8(ascii: "%"))
                bytes.append(hexDigits[Int(byte >> 4)])
                bytes.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A query string of `pairs`, each name and value percent-encoded.
    public static func query(_ pairs: [(name: String, value: String)]) -> String {
        pairs.map { percentEncoded($0.name) + "=" + percentEncoded($0.value) }.joined(separator: "&")
    }

    /// RFC 9110 `token`: the characters a header name may have.
    public static func isToken(_ text: String) -> Bool {
        !text.isEmpty
            && text.utf8.allSatisfy { byte in
                isAlphanumeric(byte) || "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
    }

    /// A header value: no control characters but tab, so no CR or LF to split the request.
    public static func isValidHeaderValue(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }

    // MARK: Characters

    private static let hexDigits: [UInt8] = Array("0123456789ABCDEF".utf8)

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
    }

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        isAlphanumeric(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
            || byte == UInt8(ascii: "~")
    }

    private static func isPlaceholderCharacter(_ byte: UInt8) -> Bool {
        isAlphanumeric(byte) || byte == UInt8(ascii: "_")
    }

    /// RFC 3986 `pchar` and `/`, less `@` (refused above) and `%` (checked above).
    private static func isPathCharacter(_ byte: UInt8) -> Bool {
        isUnreserved(byte) || "/!$&'()*+,;=:".utf8.contains(byte)
    }
}
