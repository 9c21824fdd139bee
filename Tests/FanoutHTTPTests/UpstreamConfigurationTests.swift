import FanoutHTTP
import Testing

@Suite("Upstream configuration")
struct UpstreamConfigurationTests {
    @Test("the simple form: NAME=URL pairs, from flags or one comma-separated variable")
    func simpleForm() throws {
        let upstreams = try UpstreamConfiguration.parseSimple([
            "api=http://127.0.0.1:9000/v1/", "billing=https://billing.internal,demo=http://[::1]:8080",
        ])
        #expect(upstreams.map(\.name) == ["api", "billing", "demo"])
        #expect(upstreams[0].baseURL == (try BaseURL(parsing: "http://127.0.0.1:9000/v1")))
        #expect(upstreams[0].baseURL.path == "/v1")
        #expect(upstreams[1].baseURL.port == 443)
        #expect(upstreams[2].baseURL.host == "::1")
        #expect(upstreams[0].maximumAttempts == 3 && upstreams[0].maximumConnections == 64)
    }

    @Test(
        "bad configuration names the upstream and the problem",
        arguments: [
            ("api", nil, "NAME=URL"),
            ("a b=http://x", "a b", "name"),
            ("api=ftp://x", "api", "http://"),
            ("api=http://user:pw@host", "api", "user information"),
            ("api=http://host/v1?x=1", "api", "query"),
            ("api=http://host:99999", "api", "port"),
            ("api=http://", "api", "no host"),
            ("api=http://host/a/../b", "api", "'..'"),
        ] as [(String, String?, String)])
    func simpleFormErrors(text: String, upstream: String?, fragment: String) {
        do {
            _ = try UpstreamConfiguration.parseSimple([text])
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.upstream == upstream)
            #expect(error.description.contains(fragment), "\(error)")
        }
    }

    @Test("the full form, with every setting")
    func fileForm() throws {
        let file = #"""
            {"api": {"url": "http://127.0.0.1:9000", "methods": ["get", "POST"], "path_prefixes": ["/users/", "/teams"],
                     "forward_headers": ["Authorization"], "headers": {"X-Api-Key": {"env": "KEY"}, "accept": "application/json"},
                     "max_connections": 8, "timeout_ms": 2500, "retry": {"max_attempts": 5}, "max_response_bytes": 4096}}
            """#
        let upstream = try #require(
            try UpstreamConfiguration.parseFile(Array(file.utf8)) { $0 == "KEY" ? "k-123" : nil }.first)
        #expect(upstream.methods == ["GET", "POST"])
        #expect(upstream.pathPrefixes == ["/users", "/teams"])
        #expect(upstream.forwardHeaders == ["authorization"])
        #expect(upstream.headers.map { "\($0.name)=\($0.value)" } == ["x-api-key=k-123", "accept=application/json"])
        #expect(upstream.maximumConnections == 8)
        #expect(upstream.timeout == .milliseconds(2500))
        #expect(upstream.maximumAttempts == 5)
        #expect(upstream.maximumResponseBytes == 4096)
    }

    @Test(
        "bad full forms name the upstream and the problem",
        arguments: [
            (#"[]"#, nil, "JSON object"),
            (#"{"api": {}}"#, "api", "url"),
            (#"{"api": {"url": "http://x", "colour": 1}}"#, "api", "unknown setting"),
            (#"{"api": {"url": "http://x", "methods": ["TRACE"]}}"#, "api", "methods"),
            (#"{"api": {"url": "http://x", "path_prefixes": ["users"]}}"#, "api", "path prefix"),
            (#"{"api": {"url": "http://x", "forward_headers": ["host"]}}"#, "api", "cannot be forwarded"),
            (#"{"api": {"url": "http://x", "headers": {"x-key": {"env": "UNSET"}}}}"#, "api", "UNSET"),
            (#"{"api": {"url": "http://x", "headers": {"x-key": "a\r\nb"}}}"#, "api", "control"),
            (#"{"api": {"url": "http://x", "retry": {"max_attempts": 9}}}"#, "api", "max_attempts"),
            (#"{"api": {"url": "http://x", "max_connections": 0}}"#, "api", "max_connections"),
        ] as [(String, String?, String)])
    func fileFormErrors(file: String, upstream: String?, fragment: String) {
        do {
            _ = try UpstreamConfiguration.parseFile(Array(file.utf8)) { _ in nil }
            Issue.record("accepted \(file)")
        } catch {
            #expect(error.upstream == upstream)
            #expect(error.description.contains(fragment), "\(error)")
        }
    }

    @Test("a name configured twice is refused")
    func duplicates() throws {
        let upstreams = try UpstreamConfiguration.parseSimple(["a=http://x", "a=http://y"])
        #expect(throws: UpstreamConfigurationError.self) { try UpstreamConfiguration.checkUnique(upstreams) }
    }
}
