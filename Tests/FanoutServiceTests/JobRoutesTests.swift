import FanoutJobs
import FanoutService
import FastCGI
import Foundation
import Logging
import Testing

private func request(_ method: String, _ path: String, body: String = "", headers: [String: String] = [:])
    -> FastCGIRequest
{
    var parameters = ["REQUEST_METHOD": method, "DOCUMENT_URI": path, "CONTENT_TYPE": "application/json"]
    for (name, value) in headers {
        parameters["HTTP_" + name.uppercased().replacingOccurrences(of: "-", with: "_")] = value
    }
    return FastCGIRequest(parameters: parameters, body: Array(body.utf8))
}

extension FastCGIResponse {
    fileprivate func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
    fileprivate var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
    }
}

@Suite("Job routes")
final class JobRoutesTests {
    /// Each test's own job store, removed after it.
    let directory = "/tmp/fanout-service-jobs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func makeService() throws -> FanoutService {
        FanoutService(
            configuration: FanoutService.Configuration(),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
            jobs: (try SQLiteJobStore(directory: directory), JobManager.Configuration()))
    }

    let batch = #"{"tasks":[{"id":"a","op":"echo","input":1}]}"#

    @Test("Prefer: respond-async answers 202 with Location, Retry-After and Preference-Applied")
    func accepted() async throws {
        let service = try makeService()
        let response = await service.handle(
            request("POST", "/batch", body: batch, headers: ["Prefer": "respond-async, wait=5"]))
        #expect(response.status == 202)
        let id = try #require(response.json["id"] as? String)
        #expect(response.header("Location") == "/batch/\(id)")
        #expect(response.header("Preference-Applied") == "respond-async")
        #expect(response.header("Retry-After") != nil)
        let lookup = await service.handle(request("GET", "/batch/\(id)"))
        #expect(lookup.status == 200)
        #expect(lookup.json["id"] as? String == id)
    }

    @Test(
        "bad requests around jobs get the documented problems",
        arguments: [
            ("POST", "/batch", ["Prefer": "respond-async", "Idempotency-Key": ""], 400),
            ("POST", "/batch", ["Prefer": "respond-async", "Idempotency-Key": "has space"], 400),
            // Checked without Prefer too: a key that could never work is reported.
            ("POST", "/batch", ["Idempotency-Key": String(repeating: "k", count: 256)], 400),
            ("GET", "/batch/0123456789abcdef0123456789abcdef", [:], 404),
            ("GET", "/batch/not-an-id", [:], 404),
            ("DELETE", "/batch/0123456789abcdef0123456789abcdef", [:], 404),
            ("PUT", "/batch/0123456789abcdef0123456789abcdef", [:], 405),
        ])
    func problems(method: String, path: String, headers: [String: String], status: Int) async throws {
        let response = try await makeService().handle(request(method, path, body: batch, headers: headers))
        #expect(response.status == status)
        #expect(response.header("Content-Type") == "application/problem+json")
    }

    @Test("without Prefer the batch runs synchronously, as before")
    func synchronousByDefault() async throws {
        let response = try await makeService().handle(request("POST", "/batch", body: batch))
        #expect(response.status == 200)
        #expect(response.json["status"] as? String == "succeeded")
    }
}
