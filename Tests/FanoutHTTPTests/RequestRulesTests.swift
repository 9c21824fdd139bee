import FanoutHTTP
import Testing

@Suite("Request rules")
struct RequestRulesTests {
    @Test(
        "hostile paths are refused",
        arguments: [
            "users/1",  // not under the base
            "http://evil.example/x",
            "//evil.example/x",
            "/a//b",
            "/a/../b",
            "/..",
            "/a/./b",
            "/a\\..\\b",
            "/a%2e%2e/b",
            "/a/%2E%2E/b",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a%252e%252e",
            "/a%00b",
            "/a%0d%0aHost:%20evil",
            "/a%zz",
            "/a%2",
            "/user@evil",
            "/a\r\nHost: evil",
            "/a\tb",
            "/a b",
            "/a?b=1",
            "/a#frag",
            "/ü",
            "/{unclosed",
            "/closed}",
            "/{a{b}}",
            "/{a-b}",
            "/{}",
        ])
    func refusesHostilePath(path: String) {
        #expect(RequestRules.problem(inPath: path, allowPlaceholders: true) != nil, "accepted \(path)")
    }

    @Test(
        "ordinary paths are accepted",
        arguments: ["/", "/users/42", "/users/{id}/orders", "/a-b_c.d~e/f:g", "/caf%C3%A9", "/x/{a}.json", "/a%20b"])
    func acceptsOrdinaryPath(path: String) {
        #expect(RequestRules.problem(inPath: path, allowPlaceholders: true) == nil)
    }

    @Test("placeholders are refused where not allowed (path prefixes)")
    func placeholdersOnlyWhereAllowed() {
        #expect(RequestRules.problem(inPath: "/users/{id}", allowPlaceholders: false) != nil)
    }

    @Test("placeholder values are percent-encoded as one segment")
    func fillsPlaceholders() {
        #expect(RequestRules.placeholders(in: "/teams/{team}/members/{id}.json") == ["team", "id"])
        #expect(
            RequestRules.fill("/teams/{team}/members/{id}", parameters: ["team": "a/b c?#", "id": "7"])
                == "/teams/a%2Fb%20c%3F%23/members/7")
        #expect(RequestRules.fill("/u/{x}", parameters: ["x": "é"]) == "/u/%C3%A9")
    }

    @Test("placeholder values that would climb out of the path are refused", arguments: ["", ".", "..", "../admin", "a/../b", "..\\x"])
    func refusesClimbingValues(value: String) {
        #expect(RequestRules.problem(inParameterValue: value) != nil)
    }

    @Test("placeholder values that only look odd are accepted", arguments: ["a.b", "...", "a/b", "%2e", "x..y"])
    func acceptsOddValues(value: String) {
        #expect(RequestRules.problem(inParameterValue: value) == nil)
    }

    @Test(
        "headers a task may not set",
        arguments: [
            "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
            "proxy-authorization", "proxy-connection", "authorization", "cookie", "x-forwarded-for", "x-forwarded-host",
            "forwarded", "x-request-id", "idempotency-key", "bad header", "bad:header", "",
        ])
    func refusesTaskHeader(name: String) {
        #expect(RequestRules.problem(inTaskHeader: name) != nil)
    }

    @Test("headers a task may set", arguments: ["accept", "accept-language", "x-custom", "if-none-match", "content-type"])
    func acceptsTaskHeader(name: String) {
        #expect(RequestRules.problem(inTaskHeader: name) == nil)
    }

    @Test("header values cannot split the request")
    func headerValues() {
        #expect(!RequestRules.isValidHeaderValue("a\r\nHost: evil"))
        #expect(!RequestRules.isValidHeaderValue("a\nb"))
        #expect(!RequestRules.isValidHeaderValue("a\u{0}b"))
        #expect(RequestRules.isValidHeaderValue("text/plain; q=0.5\twith tab"))
    }

    @Test("path prefixes confine by whole segments")
    func prefixes() {
        #expect(RequestRules.isUnder("/users/1", prefixes: ["/users"]))
        #expect(RequestRules.isUnder("/users", prefixes: ["/users"]))
        #expect(!RequestRules.isUnder("/users-admin", prefixes: ["/users"]))
        #expect(!RequestRules.isUnder("/admin", prefixes: ["/users", "/teams"]))
        #expect(RequestRules.isUnder("/anything", prefixes: []))
        #expect(RequestRules.canBeUnder(start: "/us", prefixes: ["/users"]))
        #expect(RequestRules.canBeUnder(start: "/users/", prefixes: ["/users"]))
        #expect(!RequestRules.canBeUnder(start: "/admin/", prefixes: ["/users"]))
    }

    @Test("queries are encoded by Fanout")
    func encodesQuery() {
        #expect(RequestRules.query([("q", "a b&c=d"), ("tag", "x"), ("tag", "y")]) == "q=a%20b%26c%3Dd&tag=x&tag=y")
    }
}
