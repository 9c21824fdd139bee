import FanoutEngine
import FanoutHTTP
import Testing

@Suite("http operation input")
struct HTTPOperationTests {
    static let client: UpstreamClient = {
        var api = Upstream(name: "api", baseURL: try! BaseURL(parsing: "http://127.0.0.1:9/v1"))
        api.forwardHeaders = ["authorization"]
        var readOnly = Upstream(name: "readonly", baseURL: try! BaseURL(parsing: "http://127.0.0.1:9"))
        readOnly.methods = ["GET"]
        readOnly.pathPrefixes = ["/public"]
        readOnly.headers = [("x-api-key", "operator-key")]
        return UpstreamClient(upstreams: [api, readOnly])
    }()

    static func decoder() -> BatchDecoder {
        var registry = OperationRegistry()
        registry.register(HTTPOperation(client: client))
        registry.register(EchoOperation())
        return BatchDecoder(registry: registry, limits: EngineLimits())
    }

    func problems(_ tasks: String, context: RequestContext = .none) -> [ValidationIssue] {
        do {
            _ = try Self.decoder().decode(Array(#"{"tasks": \#(tasks)}"#.utf8), context: context)
            return []
        } catch {
            return error.issues
        }
    }

    @Test(
        "inputs that must not reach an upstream are refused while validating",
        arguments: [
            (#"{"upstream": "http://127.0.0.1:9", "path": "/x"}"#, "input.upstream"),
            (#"{"path": "/x"}"#, "input.upstream"),
            (#"{"upstream": "api"}"#, "input.path"),
            (#"{"upstream": "api", "path": "/x", "method": "TRACE"}"#, "input.method"),
            (#"{"upstream": "api", "path": "/x", "method": "get"}"#, "input.method"),
            (#"{"upstream": "readonly", "path": "/public/x", "method": "DELETE"}"#, "input.method"),
            (#"{"upstream": "readonly", "path": "/private"}"#, "input.path"),
            (#"{"upstream": "readonly", "path": "/pub"}"#, "input.path"),
            (#"{"upstream": "api", "path": "/../x"}"#, "input.path"),
            (#"{"upstream": "api", "path": "/x", "headers": {"Authorization": "Bearer x"}}"#, "input.headers.Authorization"),
            (#"{"upstream": "api", "path": "/x", "headers": {"x-a": 1}}"#, "input.headers.x-a"),
            (#"{"upstream": "api", "path": "/u/{id}"}"#, "input.params.id"),
            (#"{"upstream": "api", "path": "/u/{id}", "params": {"id": {"a": 1}}}"#, "input.params.id"),
            (#"{"upstream": "api", "path": "/u/{id}", "params": {"id": ".."}}"#, "input.params.id"),
            (#"{"upstream": "api", "path": "/u", "params": {"id": 1}}"#, "input.params.id"),
            (#"{"upstream": "api", "path": "/u", "query": {"a": {"b": 1}}}"#, "input.query.a"),
            (#"{"upstream": "api", "path": "/u", "success_status": [99]}"#, "input.success_status[0]"),
            (#"{"upstream": "api", "path": "/u", "success_status": []}"#, "input.success_status"),
            (#"{"upstream": "api", "path": "/u", "retry": {"max_attempts": 6}}"#, "input.retry.max_attempts"),
            (#"{"upstream": "api", "path": "/u", "idempotency_key": ""}"#, "input.idempotency_key"),
            (#"{"upstream": "api", "path": "/u", "url": "http://evil"}"#, "input.url"),
        ])
    func refusesInput(input: String, field: String) {
        let found = problems(#"[{"id": "t", "op": "http", "input": \#(input)}]"#)
        #expect(found.contains { $0.field == field }, "issues were \(found)")
    }

    @Test(
        "a reference cannot choose the upstream, method or path",
        arguments: ["upstream", "method", "path", "success_status", "retry", "idempotency_key"])
    func referencesOnlyForData(field: String) {
        let input = #"{"upstream": "api", "path": "/x", "\#(field)": {"$ref": "src#/v"}}"#
        let found = problems(#"[{"id": "src", "op": "echo", "input": {}}, {"id": "t", "op": "http", "input": \#(input)}]"#)
        #expect(found.contains { $0.field == "input." + field && $0.message.contains("cannot be a reference") })
    }

    @Test("references may fill params, query, headers and body")
    func referencesForData() {
        let found = problems(
            #"""
            [{"id": "src", "op": "echo", "input": {"v": 1}},
             {"id": "t", "op": "http", "input": {"upstream": "api", "path": "/u/{id}", "params": {"id": {"$ref": "src#/v"}},
              "query": {"q": {"$ref": "src#/v"}}, "headers": {"x-v": {"$ref": "src#/v"}}, "body": {"$ref": "src"}}}]
            """#)
        #expect(found.isEmpty, "issues were \(found)")
    }

    @Test("/ops lists the upstream names, never their URLs")
    func schemaListsNames() {
        let schema = HTTPOperation(client: Self.client).inputSchema.description
        #expect(schema.contains(#""enum":["api","readonly"]"#))
        #expect(!schema.contains("127.0.0.1"))
    }

    @Test("the service is asked only for the request headers some upstream forwards")
    func forwardsOnlyWhereConfigured() {
        let operation = HTTPOperation(client: Self.client)
        #expect(operation.requestHeaderNames == ["authorization"])
    }
}
