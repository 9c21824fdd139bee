import FanoutEngine
import FanoutService
import FastCGI
import Logging
import Testing

private func makeService(_ configure: (inout FanoutService.Configuration) -> Void = { _ in }) -> FanoutService {
    var configuration = FanoutService.Configuration()
    configure(&configuration)
    return FanoutService(
        configuration: configuration, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
}

private func request(
    _ method: String, _ path: String, body: String = "", contentType: String? = "application/json",
    bodyTooLarge: Bool = false
) -> FastCGIRequest {
    var parameters = ["REQUEST_METHOD": method, "DOCUMENT_URI": path, "REQUEST_URI": path]
    if let contentType { parameters["CONTENT_TYPE"] = contentType }
    return FastCGIRequest(parameters: parameters, body: Array(body.utf8), bodyTooLarge: bodyTooLarge)
}

/// Starts `body` as a batch and returns once the service counts it in flight.
private func startBatch(_ service: FanoutService, _ body: String) async throws -> Task<FastCGIResponse, Never> {
    let task = Task { await service.handle(request("POST", "/batch", body: body)) }
    while service.batchesInFlight == 0 { try await Task.sleep(for: .milliseconds(5)) }
    return task
}

extension FastCGIResponse {
    fileprivate var text: String { String(decoding: body, as: UTF8.self) }
    fileprivate func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}

@Suite("HTTP service")
struct FanoutServiceTests {
    @Test("a batch of instant operations is answered at once, data flow included; one that waits, from a task")
    func answersAtOnceOrLater() async throws {
        let service = makeService()
        let instant = #"{"tasks":[{"id":"a","op":"echo","input":{"x":7}},{"id":"b","op":"echo","input":{"$ref":"a#/x"}}]}"#
        guard case .response(let response) = service.answer(request("POST", "/batch", body: instant)) else {
            Issue.record("a batch of echo tasks was not answered at once")
            return
        }
        #expect(response.status == 200)
        #expect(response.text.contains(#""id":"b","status":"succeeded","output":7"#))
        #expect(response.header("X-Request-Id") != nil)
        #expect(service.batchesInFlight == 0)

        let waiting = #"{"tasks":[{"id":"a","op":"echo"},{"id":"s","op":"sleep","input":{"ms":1}}]}"#
        guard case .task(let work) = service.answer(request("POST", "/batch", body: waiting)) else {
            Issue.record("a batch with a sleep was answered without waiting")
            return
        }
        #expect(service.batchesInFlight == 1)
        let later = await work()
        #expect(later.status == 200)
        #expect(later.text.contains(#""id":"s","status":"succeeded""#))
        #expect(service.batchesInFlight == 0)

        guard case .response(let refused) = service.answer(request("POST", "/batch", body: "{")) else {
            Issue.record("an invalid batch was not refused at once")
            return
        }
        #expect(refused.status == 400)
    }

    @Test(
        "routes answer with the documented status",
        arguments: [
            ("GET", "/healthz", "", 200),
            ("HEAD", "/healthz", "", 200),
            ("POST", "/healthz", "", 405),
            ("GET", "/ops", "", 200),
            ("DELETE", "/ops", "", 405),
            ("GET", "/batch", "", 405),
            ("POST", "/batch", #"{"tasks":[{"id":"a","op":"echo"}]}"#, 200),
            ("POST", "/batch", #"{"tasks":[]}"#, 400),
            ("POST", "/batch", "{", 400),
            ("POST", "/ops/echo", "[1]", 200),
            ("POST", "/ops/echo", "", 200),
            ("GET", "/ops/echo", "", 405),
            ("POST", "/ops/missing", "{}", 404),
            ("POST", "/ops/sleep", #"{"ms":-5}"#, 400),
            ("POST", "/ops/fail", #"{"code":"nope"}"#, 422),
            ("POST", "/ops/", "", 404),
            ("GET", "/", "", 404),
            ("GET", "/batch/extra", "", 404),
        ])
    func routes(method: String, path: String, body: String, status: Int) async {
        let response = await makeService().handle(request(method, path, body: body))
        #expect(response.status == status, "\(method) \(path): \(response.text)")
    }

    @Test("errors are problem documents with type, title, status and detail")
    func problemDocuments() async {
        let response = await makeService().handle(request("POST", "/batch", body: #"{"tasks":[{"id":"a","op":"x"}]}"#))
        #expect(response.header("Content-Type") == "application/problem+json")
        #expect(
            response.text.hasPrefix(
                #"{"type":"/problems/invalid-request","title":"Invalid request","status":400,"detail":"#))
        #expect(response.text.contains(#""errors":[{"task":"a","field":"op","message":"unknown operation 'x'"#))
    }

    @Test("405 names the allowed methods")
    func methodNotAllowed() async {
        let response = await makeService().handle(request("PUT", "/batch"))
        #expect(response.header("Allow") == "POST")
    }

    @Test(
        "only JSON bodies are accepted",
        arguments: [
            ("application/json", 200), ("application/json; charset=utf-8", 200),
            ("Application/JSON;charset=\"UTF-8\"", 200),
            ("application/json; charset=latin1", 415), ("text/plain", 415), (nil, 415),
        ] as [(String?, Int)])
    func mediaTypes(contentType: String?, status: Int) async {
        let response = await makeService().handle(
            request("POST", "/batch", body: #"{"tasks":[{"id":"a","op":"echo"}]}"#, contentType: contentType))
        #expect(response.status == status)
    }

    @Test("no body needs no media type: an operation takes it as null, a batch as malformed")
    func emptyBodyWithoutMediaType() async {
        let echo = await makeService().handle(request("POST", "/ops/echo", body: "", contentType: nil))
        #expect(echo.status == 200)
        #expect(echo.text == "null")
        let batch = await makeService().handle(request("POST", "/batch", body: "", contentType: nil))
        #expect(batch.status == 400)
    }

    @Test("a body over the limit is 413")
    func bodyTooLarge() async {
        let response = await makeService().handle(request("POST", "/batch", bodyTooLarge: true))
        #expect(response.status == 413)
        #expect(response.text.contains("/problems/body-too-large"))
    }

    @Test("past the batches-in-flight limit the answer is an immediate 503 with Retry-After")
    func shedsLoad() async throws {
        let service = makeService { $0.maximumBatchesInFlight = 1 }
        let slow = try await startBatch(service, #"{"tasks":[{"id":"a","op":"sleep","input":{"ms":300}}]}"#)
        let shed = await service.handle(request("POST", "/batch", body: #"{"tasks":[{"id":"a","op":"echo"}]}"#))
        #expect(shed.status == 503)
        #expect(shed.header("Retry-After") == "1")
        #expect(await slow.value.status == 200)
        #expect(service.batchesInFlight == 0)
    }

    @Test("while draining, health and new work answer 503 but running batches finish")
    func drains() async throws {
        let service = makeService()
        let running = try await startBatch(service, #"{"tasks":[{"id":"a","op":"sleep","input":{"ms":200}}]}"#)
        service.beginDraining()
        #expect(await service.handle(request("GET", "/healthz")).status == 503)
        #expect(
            await service.handle(request("POST", "/batch", body: #"{"tasks":[{"id":"a","op":"echo"}]}"#)).status == 503)
        let finished = await running.value
        #expect(finished.status == 200)
        #expect(finished.text.contains(#""status":"succeeded""#))
    }

    @Test("a batch cancelled for shutdown reports its unfinished tasks as shutdown")
    func shutdownCancellation() async throws {
        let service = makeService()
        let running = try await startBatch(service, #"{"tasks":[{"id":"a","op":"sleep","input":{"ms":10000}}]}"#)
        service.markShuttingDown()
        running.cancel()
        let response = await running.value
        #expect(response.text.contains(#""code":"shutdown""#))
    }

    @Test("GET /ops lists every operation with its input schema")
    func listsOperations() async {
        let response = await makeService().handle(request("GET", "/ops"))
        for name in ["echo", "fail", "hash", "sleep"] {
            #expect(response.text.contains(#"{"name":"\#(name)","description":"#))
        }
        #expect(response.text.contains(#""input_schema":{"type":"object","required":["ms"]"#))
    }
}
