import FanoutEngine

/// The `http` operation: one call to an operator-configured upstream, with retries, returning
/// the upstream's status, selected headers and body.
///
/// Everything that decides where a call goes (upstream, method, path) is checked while the batch
/// is validated and can never come from another task's output; values that can (`params`,
/// `query`, `headers`, `body`) are encoded by Fanout so they cannot change the path.
public struct HTTPOperation: Operation {
    /// A validated call.
    public struct Input: Sendable {
        let endpoint: UpstreamClient.Endpoint
        let method: String
        let url: String
        let headers: [(name: String, value: String)]
        let body: [UInt8]?
        /// Statuses counted as success; `nil` for 200–299.
        let successStatuses: [Int]?
        let maximumAttempts: Int
        let idempotencyKey: String?
    }

    public typealias Output = RawJSON

    let client: UpstreamClient

    /// The operation calling the upstreams of `client`.
    public init(client: UpstreamClient) {
        self.client = client
    }

    public var name: String { "http" }
    public var summary: String {
        "Calls an operator-configured upstream API (upstream, method, path, params, query, headers, body)."
    }

    public var inputSchema: RawJSON {
        var writer = JSONWriter()
        writer.raw(#"{"type":"object","required":["upstream","path"],"additionalProperties":false,"properties":{"#)
        writer.raw(#""upstream":{"type":"string","description":"a configured upstream name","enum":["#)
        for (index, name) in client.upstreamNames.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.string(name)
        }
        writer.raw("]},")
        writer.raw(Self.schemaTail)
        return RawJSON(writtenBy: writer)
    }

    public var requestHeaderNames: Set<String> {
        Set(client.endpoints.values.flatMap { $0.upstream.forwardHeaders })
    }

    public var fieldsWithoutReferences: Set<String> {
        ["upstream", "method", "path", "success_status", "retry", "idempotency_key"]
    }

    public func decodeInput(_ json: RawJSON) throws(InputError) -> Input {
        try decodeInput(json, context: .none)
    }

    public func decodeInput(_ json: RawJSON, context: RequestContext) throws(InputError) -> Input {
        guard let members = json.orderedMembers() else { throw InputError("must be an object") }
        var fields: [String: RawJSON] = [:]
        for (key, value) in members {
            guard Self.fields.contains(key) else { throw InputError(path: key, "is not a field of http's input") }
            guard fields.updateValue(value, forKey: key) == nil else { throw InputError(path: key, "appears more than once") }
        }

        guard let upstreamValue = fields["upstream"] else { throw InputError(path: "upstream", "is required") }
        guard let upstreamName = upstreamValue.stringValue else {
            throw InputError(path: "upstream", "must be the name of a configured upstream")
        }
        guard let endpoint = client.endpoints[upstreamName] else {
            throw InputError(path: "upstream", "unknown upstream '\(upstreamName)'; GET /ops lists them")
        }
        let upstream = endpoint.upstream

        var method = "GET"
        if let value = fields["method"] {
            guard let text = value.stringValue, Upstream.supportedMethods.contains(text) else {
                throw InputError(path: "method", "must be one of \(Upstream.supportedMethods.sorted().joined(separator: ", "))")
            }
            method = text
        }
        if let allowed = upstream.methods, !allowed.contains(method) {
            throw InputError(
                path: "method",
                "\(method) is not allowed for upstream '\(upstream.name)' (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }

        guard let pathValue = fields["path"] else { throw InputError(path: "path", "is required") }
        guard let pathTemplate = pathValue.stringValue else { throw InputError(path: "path", "must be a string") }
        if let problem = RequestRules.problem(inPath: pathTemplate, allowPlaceholders: true) {
            throw InputError(path: "path", problem)
        }
        let staticStart = String(pathTemplate.prefix { $0 != "{" })
        guard RequestRules.canBeUnder(start: staticStart, prefixes: upstream.pathPrefixes) else {
            throw InputError(path: "path", Self.prefixMessage(upstream))
        }

        var headers: [(name: String, value: String)] = []
        if let value = fields["headers"] {
            guard let list = value.orderedMembers() else {
                throw InputError(path: "headers", "must be an object of header names and string values")
            }
            for (rawName, value) in list {
                let name = rawName.lowercased()
                if let problem = RequestRules.problem(inTaskHeader: name) { throw InputError(path: "headers." + rawName, problem) }
                guard let text = value.stringValue else { throw InputError(path: "headers." + rawName, "must be a string") }
                guard RequestRules.isValidHeaderValue(text) else {
                    throw InputError(path: "headers." + rawName, "must not contain control characters (CR, LF, …)")
                }
                headers.append((name, text))
            }
        }

        var successStatuses: [Int]?
        if let value = fields["success_status"] {
            guard let list = value.arrayElements(), !list.isEmpty else {
                throw InputError(path: "success_status", "must be a non-empty array of statuses")
            }
            successStatuses = try list.enumerated().map { (index, element) throws(InputError) in
                guard let status = element.integerValue, (100...599).contains(status) else {
                    throw InputError(path: "success_status[\(index)]", "must be an integer from 100 to 599")
                }
                return status
            }
        }

        var idempotencyKey: String?
        if let value = fields["idempotency_key"] {
            guard let key = value.stringValue, (1...255).contains(key.utf8.count),
                key.utf8.allSatisfy({ (0x21...0x7E).contains($0) })
            else { throw InputError(path: "idempotency_key", "must be 1 to 255 visible ASCII characters") }
            idempotencyKey = key
        }

        var maximumAttempts = upstream.maximumAttempts
        if let value = fields["retry"] {
            guard let retry = value.orderedMembers() else { throw InputError(path: "retry", "must be {\"max_attempts\": N}") }
            for (key, value) in retry {
                guard key == "max_attempts" else { throw InputError(path: "retry." + key, "is not a retry field") }
                guard let attempts = value.integerValue, (1...Upstream.attemptLimit).contains(attempts) else {
                    throw InputError(path: "retry.max_attempts", "must be an integer from 1 to \(Upstream.attemptLimit)")
                }
                // A task may lower the upstream's attempts, never raise them.
                maximumAttempts = min(maximumAttempts, attempts)
            }
        }

        var body: [UInt8]?
        if let value = fields["body"] { body = Array(value.bytes) }

        var query: [(name: String, value: String)] = []
        if let value = fields["query"] {
            guard let list = value.orderedMembers() else { throw InputError(path: "query", "must be an object") }
            for (name, value) in list {
                if let elements = value.arrayElements() {
                    for (index, element) in elements.enumerated() {
                        guard let text = Self.scalarText(element) else {
                            throw InputError(path: "query.\(name)[\(index)]", "must be a string, number or boolean")
                        }
                        query.append((name, text))
                    }
                } else if value.kind != .null {
                    // `null` leaves the parameter out.
                    guard let text = Self.scalarText(value) else {
                        throw InputError(path: "query." + name, "must be a string, number, boolean, null or an array of them")
                    }
                    query.append((name, text))
                }
            }
        }

        // Placeholders last: with references not yet filled in, their values are still unknown.
        let placeholders = RequestRules.placeholders(in: pathTemplate)
        var parameters: [String: String] = [:]
        var parameterList: [(key: String, value: RawJSON)] = []
        if let value = fields["params"] {
            guard let list = value.orderedMembers() else { throw InputError(path: "params", "must be an object") }
            parameterList = list
        }
        for (name, _) in parameterList where !placeholders.contains(name) {
            throw InputError(path: "params." + name, "is not a placeholder in path")
        }
        for name in placeholders {
            guard let value = parameterList.first(where: { $0.key == name })?.value else {
                throw InputError(path: "params." + name, "is required by the placeholder {\(name)} in path")
            }
            guard let text = Self.scalarText(value) else {
                throw InputError(path: "params." + name, "must be a string, number or boolean")
            }
            if let problem = RequestRules.problem(inParameterValue: text) {
                throw InputError(path: "params." + name, problem)
            }
            parameters[name] = text
        }
        let path = RequestRules.fill(pathTemplate, parameters: parameters)
        guard RequestRules.isUnder(path, prefixes: upstream.pathPrefixes) else {
            throw InputError(path: "path", Self.prefixMessage(upstream))
        }

        // The operator's headers win over a task's of the same name.
        var operatorHeaders = upstream.headers
        for name in upstream.forwardHeaders {
            if let value = context.headers[name], RequestRules.isValidHeaderValue(value) {
                operatorHeaders.append((name, value))
            }
        }
        if let requestID = context.requestID, RequestRules.isValidHeaderValue(requestID) {
            operatorHeaders.append(("x-request-id", requestID))
        }
        let trace = context.traceForCall()
        operatorHeaders.append(("traceparent", trace.traceparent))
        if let state = trace.state, RequestRules.isValidHeaderValue(state) { operatorHeaders.append(("tracestate", state)) }
        if let idempotencyKey { operatorHeaders.append(("idempotency-key", idempotencyKey)) }
        headers.removeAll { header in operatorHeaders.contains { $0.name == header.name } }
        if body != nil, !headers.contains(where: { $0.name == "content-type" }) {
            headers.append(("content-type", "application/json"))
        }
        if !headers.contains(where: { $0.name == "user-agent" }) { headers.append(("user-agent", "fanout")) }

        return Input(
            endpoint: endpoint, method: method,
            url: upstream.baseURL.url(path: path, query: RequestRules.query(query)),
            headers: headers + operatorHeaders, body: body, successStatuses: successStatuses,
            maximumAttempts: maximumAttempts, idempotencyKey: idempotencyKey)
    }

    public func encodeOutput(_ output: RawJSON) throws -> RawJSON { output }

    private static let schemaTail: StaticString = #"""
        "method":{"type":"string","enum":["DELETE","GET","HEAD","OPTIONS","PATCH","POST","PUT"],"default":"GET"},\#
        "path":{"type":"string","pattern":"^/","description":"under the upstream's URL; {name} placeholders are filled from params"},\#
        "params":{"type":"object","additionalProperties":{"type":["string","number","boolean"]}},\#
        "query":{"type":"object","additionalProperties":{"type":["string","number","boolean","null","array"],"items":{"type":["string","number","boolean"]}}},\#
        "headers":{"type":"object","additionalProperties":{"type":"string"}},\#
        "body":{"description":"any JSON value, sent as application/json"},\#
        "success_status":{"type":"array","minItems":1,"items":{"type":"integer","minimum":100,"maximum":599}},\#
        "idempotency_key":{"type":"string","minLength":1,"maxLength":255},\#
        "retry":{"type":"object","additionalProperties":false,"properties":{"max_attempts":{"type":"integer","minimum":1,"maximum":5}}}}}
        """#

    private static let fields: Set<String> = [
        "upstream", "method", "path", "params", "query", "headers", "body", "success_status", "idempotency_key",
        "retry",
    ]

    private static func prefixMessage(_ upstream: Upstream) -> String {
        "must stay under the paths upstream '\(upstream.name)' allows (\(upstream.pathPrefixes.joined(separator: ", ")))"
    }

    /// A string, number or boolean as text: numbers as written, booleans as `true`/`false`.
    static func scalarText(_ value: RawJSON) -> String? {
        switch value.kind {
        case .string: value.stringValue
        case .number, .bool: String(decoding: value.bytes, as: UTF8.self)
        default: nil
        }
    }
}
