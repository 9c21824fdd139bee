import FanoutEngine
@testable import FanoutHTTP
import Testing

@Suite("http request assembly")
struct HTTPRequestAssemblyTests {
    let operation = HTTPOperation(client: HTTPOperationTests.client)
    let context = RequestContext(requestID: "req-1", headers: ["authorization": "Bearer secret"])

    func input(_ json: String) throws -> HTTPOperation.Input {
        try operation.decodeInput(RawJSON(validatingBytes: Array(json.utf8))!, context: context)
    }

    @Test("the URL is the base URL, the filled path and the encoded query")
    func buildsURL() throws {
        let call = try input(
            #"{"upstream": "api", "path": "/users/{id}/orders", "params": {"id": "a b/c"}, "query": {"limit": 10, "tag": ["x", "y z"], "skip": null}}"#)
        #expect(call.url == "http://127.0.0.1:9/v1/users/a%20b%2Fc/orders?limit=10&tag=x&tag=y%20z")
        #expect(call.method == "GET")
    }

    @Test("credentials go only to the upstream that forwards them; every call carries the request id")
    func forwardsCredentials() throws {
        let api = try input(#"{"upstream": "api", "path": "/x"}"#)
        #expect(api.headers.contains { $0 == ("authorization", "Bearer secret") })
        #expect(api.headers.contains { $0 == ("x-request-id", "req-1") })
        let readOnly = try input(#"{"upstream": "readonly", "path": "/public/x"}"#)
        #expect(!readOnly.headers.contains { $0.name == "authorization" })
        #expect(readOnly.headers.contains { $0 == ("x-request-id", "req-1") })
    }

    @Test("the operator's fixed headers win over a task's")
    func fixedHeadersWin() throws {
        let call = try input(#"{"upstream": "readonly", "path": "/public/x", "headers": {"X-Api-Key": "mine", "accept": "text/csv"}}"#)
        #expect(call.headers.filter { $0.name == "x-api-key" }.map(\.value) == ["operator-key"])
        #expect(call.headers.contains { $0 == ("accept", "text/csv") })
    }

    @Test("a body is JSON; an idempotency key becomes Idempotency-Key; a task only lowers attempts")
    func bodyKeyAndAttempts() throws {
        let call = try input(
            #"{"upstream": "api", "method": "POST", "path": "/notes", "body": {"text": "hi"}, "idempotency_key": "k-1", "retry": {"max_attempts": 1}}"#)
        #expect(call.body == Array(#"{"text": "hi"}"#.utf8))
        #expect(call.headers.contains { $0 == ("content-type", "application/json") })
        #expect(call.headers.contains { $0 == ("idempotency-key", "k-1") })
        #expect(call.maximumAttempts == 1)
        let raised = try input(#"{"upstream": "api", "path": "/x", "retry": {"max_attempts": 5}}"#)
        #expect(raised.maximumAttempts == 3)
    }
}
