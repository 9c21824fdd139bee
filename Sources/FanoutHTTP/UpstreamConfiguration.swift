import FanoutEngine

/// Reads the operator's upstreams: the simple form (`NAME=URL`) and the full form (a JSON file).
public enum UpstreamConfiguration {
    /// Parses `NAME=URL` pairs, as given to `--upstream` or, separated by commas, in
    /// `FANOUT_UPSTREAMS`.
    ///
    /// - Throws: ``UpstreamConfigurationError`` naming the upstream and the problem.
    public static func parseSimple(_ pairs: [String]) throws(UpstreamConfigurationError) -> [Upstream] {
        var upstreams: [Upstream] = []
        for pair in pairs.flatMap({ $0.split(separator: ",", omittingEmptySubsequences: true) }) {
            let pair = pair.trimmingSpaces()
            guard let equals = pair.firstIndex(of: "=") else {
                throw UpstreamConfigurationError(upstream: nil, "'\(pair)' is not NAME=URL")
            }
            let name = String(pair[..<equals])
            try checkName(name)
            do throws(UpstreamConfigurationError.Reason) {
                upstreams.append(Upstream(name: name, baseURL: try BaseURL(parsing: String(pair[pair.index(after: equals)...]))))
            } catch {
                throw UpstreamConfigurationError(upstream: name, error.message)
            }
        }
        return upstreams
    }

    /// Parses the full form: a JSON object keyed by upstream name, each with `url` and optionally
    /// `methods`, `path_prefixes`, `forward_headers`, `headers`, `max_connections`, `timeout_ms`,
    /// `retry` (`{"max_attempts": N}`) and `max_response_bytes`. A header value is a string, or
    /// `{"env": "NAME"}` for the value of an environment variable (read through `environment`).
    ///
    /// - Throws: ``UpstreamConfigurationError`` naming the upstream and the problem.
    public static func parseFile(
        _ bytes: [UInt8], environment: (String) -> String?
    ) throws(UpstreamConfigurationError) -> [Upstream] {
        guard let document = RawJSON(validatingBytes: bytes), let entries = document.orderedMembers() else {
            throw UpstreamConfigurationError(upstream: nil, "the upstreams file must be a JSON object keyed by name")
        }
        var upstreams: [Upstream] = []
        for (name, value) in entries {
            try checkName(name)
            do throws(UpstreamConfigurationError.Reason) {
                upstreams.append(try parseEntry(name: name, value, environment: environment))
            } catch {
                throw UpstreamConfigurationError(upstream: name, error.message)
            }
        }
        return upstreams
    }

    /// Checks a whole set: names unique.
    ///
    /// - Throws: ``UpstreamConfigurationError`` for the first name given twice.
    public static func checkUnique(_ upstreams: [Upstream]) throws(UpstreamConfigurationError) {
        var seen = Set<String>()
        for upstream in upstreams where !seen.insert(upstream.name).inserted {
            throw UpstreamConfigurationError(upstream: upstream.name, "is configured more than once")
        }
    }

    private static func checkName(_ name: String) throws(UpstreamConfigurationError) {
        let valid =
            (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
            }
        guard valid else {
            throw UpstreamConfigurationError(
                upstream: name, "a name is 1 to 64 letters, digits, '_', '-' or '.'")
        }
    }

    private static func parseEntry(
        name: String, _ value: RawJSON, environment: (String) -> String?
    ) throws(UpstreamConfigurationError.Reason) -> Upstream {
        guard let members = value.orderedMembers() else { throw .init("must be an object with at least \"url\"") }
        guard let url = members.first(where: { $0.key == "url" })?.value.stringValue else {
            throw .init("\"url\" is required and must be a string")
        }
        var upstream = Upstream(name: name, baseURL: try BaseURL(parsing: url))
        for (key, value) in members {
            switch key {
            case "url":
                continue
            case "methods":
                guard let list = value.arrayElements(), !list.isEmpty else {
                    throw .init("\"methods\" must be a non-empty array of method names")
                }
                var methods = Set<String>()
                for element in list {
                    guard let method = element.stringValue?.uppercased(), Upstream.supportedMethods.contains(method)
                    else {
                        throw .init(
                            "\"methods\" may contain only \(Upstream.supportedMethods.sorted().joined(separator: ", "))")
                    }
                    methods.insert(method)
                }
                upstream.methods = methods
            case "path_prefixes":
                guard let list = value.arrayElements(), !list.isEmpty else {
                    throw .init("\"path_prefixes\" must be a non-empty array of paths")
                }
                upstream.pathPrefixes = try list.map { element throws(UpstreamConfigurationError.Reason) in
                    guard var prefix = element.stringValue else { throw .init("\"path_prefixes\" must contain strings") }
                    if let problem = RequestRules.problem(inPath: prefix, allowPlaceholders: false) {
                        throw .init("path prefix '\(prefix)': \(problem)")
                    }
                    while prefix.count > 1, prefix.hasSuffix("/") { prefix.removeLast() }
                    return prefix
                }
            case "forward_headers":
                guard let list = value.arrayElements() else {
                    throw .init("\"forward_headers\" must be an array of header names")
                }
                upstream.forwardHeaders = try list.map { element throws(UpstreamConfigurationError.Reason) in
                    guard let header = element.stringValue?.lowercased(), RequestRules.isToken(header) else {
                        throw .init("\"forward_headers\" must contain header names")
                    }
                    if RequestRules.neverSent.contains(header) {
                        throw .init("header '\(header)' cannot be forwarded")
                    }
                    return header
                }
            case "headers":
                guard let list = value.orderedMembers() else {
                    throw .init("\"headers\" must be an object of header names and values")
                }
                upstream.headers = try list.map { (header, value) throws(UpstreamConfigurationError.Reason) in
                    let header = header.lowercased()
                    guard RequestRules.isToken(header), !RequestRules.neverSent.contains(header) else {
                        throw .init("'\(header)' cannot be a fixed header")
                    }
                    let text: String
                    if let string = value.stringValue {
                        text = string
                    } else if let members = value.orderedMembers(), members.count == 1, members[0].key == "env",
                        let variable = members[0].value.stringValue
                    {
                        guard let fromEnvironment = environment(variable), !fromEnvironment.isEmpty else {
                            throw .init("header '\(header)' reads environment variable \(variable), which is not set")
                        }
                        text = fromEnvironment
                    } else {
                        throw .init("header '\(header)' must be a string or {\"env\": \"VARIABLE\"}")
                    }
                    guard RequestRules.isValidHeaderValue(text) else {
                        throw .init("header '\(header)' has control characters in its value")
                    }
                    return (header, text)
                }
            case "max_connections":
                upstream.maximumConnections = try integer(value, key, in: 1...10_000)
            case "timeout_ms":
                upstream.timeout = .milliseconds(try integer(value, key, in: 1...86_400_000))
            case "retry":
                guard let retry = value.orderedMembers(), retry.allSatisfy({ $0.key == "max_attempts" }) else {
                    throw .init("\"retry\" must be {\"max_attempts\": N}")
                }
                if let attempts = retry.first?.value {
                    upstream.maximumAttempts = try integer(attempts, "retry.max_attempts", in: 1...Upstream.attemptLimit)
                }
            case "max_response_bytes":
                upstream.maximumResponseBytes = try integer(value, key, in: 1...(1 << 30))
            default:
                throw .init("unknown setting \"\(key)\"")
            }
        }
        return upstream
    }

    private static func integer(
        _ value: RawJSON, _ key: String, in range: ClosedRange<Int>
    ) throws(UpstreamConfigurationError.Reason) -> Int {
        guard let number = value.integerValue, range.contains(number) else {
            throw .init("\"\(key)\" must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }
}
