import FanoutEngine
import FanoutJobs
import FanoutService
import FastCGI
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing

private let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

private func request(
    _ method: String, _ path: String, body: String = "", extra: [String: String] = [:]
) -> FastCGIRequest {
    var parameters = ["REQUEST_METHOD": method, "DOCUMENT_URI": path, "REQUEST_URI": path]
    if !body.isEmpty { parameters["CONTENT_TYPE"] = "application/json" }
    parameters.merge(extra) { $1 }
    return FastCGIRequest(parameters: parameters, body: Array(body.utf8))
}

extension FastCGIResponse {
    fileprivate var text: String { String(decoding: body, as: UTF8.self) }
    fileprivate func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}

/// The value of the series `name{labels}` in a Prometheus text exposition, if present.
private func sample(_ exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// Keeps the messages and metadata logged at `info` and above.
private struct RecordingLogHandler: LogHandler {
    let lines: NIOLockedValueBox<[(message: String, metadata: Logger.Metadata)]>
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lines.withLockedValue { $0.append((event.message.description, event.metadata ?? [:])) }
    }
}

@Suite("Metrics, request ids and trace context")
struct OperabilityTests {
    @Test("each request is logged once: through the request log when one is set, else through the logger")
    func requestLogLines() async throws {
        let batch = #"{"tasks":[{"id":"a","op":"echo","input":1},{"id":"b","op":"echo","input":2}]}"#
        let logged = NIOLockedValueBox<[(message: String, metadata: Logger.Metadata)]>([])
        let logger = Logger(label: "test") { _ in RecordingLogHandler(lines: logged) }

        let plain = FanoutService(configuration: .init(), logger: logger)
        _ = await plain.handle(request("POST", "/batch", body: batch, extra: ["REQUEST_ID": "req-1"]))
        let line = try #require(logged.withLockedValue { $0 }.last)
        #expect(line.message == "request")
        #expect(line.metadata["request_id"] == "req-1")
        #expect(line.metadata["tasks"] == "2")
        #expect(line.metadata["status"] == "200")

        let records = NIOLockedValueBox<[RequestLogRecord]>([])
        var configuration = FanoutService.Configuration()
        configuration.requestLog = { record in records.withLockedValue { $0.append(record) } }
        let direct = FanoutService(configuration: configuration, logger: logger)
        let before = logged.withLockedValue { $0.count }
        _ = await direct.handle(request("POST", "/batch", body: batch, extra: ["REQUEST_ID": "req-2"]))
        _ = await direct.handle(request("GET", "/nowhere", extra: ["REQUEST_ID": "req-3"]))
        #expect(logged.withLockedValue { $0.count } == before)
        let written = records.withLockedValue { $0 }
        #expect(written.map(\.requestID) == ["req-2", "req-3"])
        #expect(written.map(\.status) == [200, 404])
        #expect(written.map(\.tasks) == [2, 0])
        #expect(written.map(\.path) == ["/batch", "/nowhere"])
        #expect(written.map(\.method) == ["POST", "GET"])
        #expect(written.allSatisfy { !$0.streamed && $0.duration >= .zero })
        #expect(written[0].metadata["request_id"] == "req-2")

        // Not called when the logger's level is above info.
        var noticeLogger = logger
        noticeLogger.logLevel = .notice
        let atNotice = FanoutService(configuration: configuration, logger: noticeLogger)
        _ = await atNotice.handle(request("GET", "/healthz"))
        #expect(records.withLockedValue { $0.count } == 2)
    }

    @Test("GET /metrics counts requests by route template, method and status, and tasks by operation")
    func metricsCountWhatHappened() async {
        let service = FanoutService(configuration: .init(), logger: quiet)
        for _ in 0..<3 {
            _ = await service.handle(
                request("POST", "/batch", body: #"{"tasks":[{"id":"a","op":"echo","input":1},{"id":"b","op":"fail","input":{"code":"x","message":"y"}}]}"#))
        }
        _ = await service.handle(request("GET", "/nowhere/7f3a"))
        _ = await service.handle(request("GET", "/batch/0123456789abcdef0123456789abcdef"))
        _ = await service.handle(request("POST", "/ops/echo", body: "2"))
        let response = await service.handle(request("GET", "/metrics"))
        #expect(response.status == 200)
        #expect(response.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let text = response.text
        #expect(sample(text, #"fanout_http_requests_total{route="/batch",method="POST",status="200"}"#) == 3)
        #expect(sample(text, #"fanout_http_requests_total{route="other",method="GET",status="404"}"#) == 1)
        // Job resources are one series, whatever the id (jobs are off here: 404).
        #expect(text.contains(#"route="/batch/{id}""#))
        #expect(!text.contains("0123456789abcdef") && !text.contains("7f3a"))
        #expect(sample(text, #"fanout_tasks_total{operation="echo",status="succeeded"}"#) == 4)
        #expect(sample(text, #"fanout_tasks_total{operation="fail",status="failed"}"#) == 3)
        #expect(
            sample(text, #"fanout_http_server_request_duration_seconds_count{route="/batch",method="POST",status="200"}"#)
                == 3)
        #expect(text.contains(#"fanout_http_server_request_duration_seconds_bucket{route="/batch",method="POST",status="200",le="0.005"}"#))
        #expect(sample(text, #"fanout_task_duration_seconds_count{operation="echo"}"#) == 4)
        #expect((sample(text, "process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((sample(text, "process_open_fds") ?? 0) > 2)
        #expect(sample(text, "fanout_batches_in_flight") == 0)
    }

    @Test("batches refused for load are counted by reason")
    func shedBatchesAreCounted() async {
        let service = FanoutService(configuration: .init(), logger: quiet)
        service.beginDraining()
        let refused = await service.handle(request("POST", "/batch", body: #"{"tasks":[{"id":"a","op":"echo"}]}"#))
        #expect(refused.status == 503)
        let text = await service.handle(request("GET", "/metrics")).text
        #expect(sample(text, #"fanout_batches_shed_total{reason="draining"}"#) == 1)
        #expect(sample(text, #"fanout_batches_shed_total{reason="overloaded"}"#) == 0)
    }

    @Test("every answer carries the request id nginx passed, else the client's, else a new one")
    func requestIDs() async {
        let service = FanoutService(configuration: .init(), logger: quiet)
        let fromNginx = await service.handle(
            request("GET", "/healthz", extra: ["REQUEST_ID": "abc123", "HTTP_X_REQUEST_ID": "client-1"]))
        #expect(fromNginx.header("X-Request-Id") == "abc123")
        let fromClient = await service.handle(request("GET", "/healthz", extra: ["HTTP_X_REQUEST_ID": "client-1"]))
        #expect(fromClient.header("X-Request-Id") == "client-1")
        let insane = await service.handle(request("GET", "/healthz", extra: ["HTTP_X_REQUEST_ID": "a b\"c"]))
        let generated = await service.handle(request("GET", "/nowhere"))
        for response in [insane, generated] {
            let id = response.header("X-Request-Id") ?? ""
            #expect(id.count == 32 && id.allSatisfy(\.isHexDigit), "\(id)")
        }
        #expect(insane.header("X-Request-Id") != generated.header("X-Request-Id"))
    }

    @Test("an asynchronous batch's job document records its request id")
    func jobDocumentHasTheRequestID() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fanout-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteJobStore(directory: directory)
        let service = FanoutService(configuration: .init(), logger: quiet, jobs: (store, JobManager.Configuration()))
        let accepted = await service.handle(
            request(
                "POST", "/batch", body: #"{"tasks":[{"id":"a","op":"echo"}]}"#,
                extra: ["HTTP_PREFER": "respond-async", "REQUEST_ID": "req-job-1"]))
        #expect(accepted.status == 202)
        #expect(accepted.header("X-Request-Id") == "req-job-1")
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(accepted.body)) as? [String: Any])
        #expect(document["request_id"] as? String == "req-job-1")
        let id = try #require(document["id"] as? String)
        let read = await service.handle(request("GET", "/batch/\(id)", extra: ["REQUEST_ID": "req-read"]))
        let stored = try #require(try JSONSerialization.jsonObject(with: Data(read.body)) as? [String: Any])
        #expect(stored["request_id"] as? String == "req-job-1")
        #expect(read.header("X-Request-Id") == "req-read")
    }

    @Test(
        "a valid traceparent is continued with a span of Fanout's; anything else starts a new trace",
        arguments: [
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736", "01"),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra", "4bf92f3577b34da6a3ce929d0e0e4736", "00"),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", nil, "00"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", nil, "00"),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", nil, "00"),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", nil, "00"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", nil, "00"),
            ("garbage", nil, "00"),
        ] as [(String, String?, String)])
    func traceContext(header: String, continuedTrace: String?, flags: String) {
        let trace = TraceContext(continuing: header, state: "vendor=1")
        let parts = trace.traceparent.split(separator: "-").map(String.init)
        #expect(parts.count == 4)
        #expect(parts[0] == "00")
        #expect(parts[1].count == 32 && parts[2].count == 16 && parts[3] == flags)
        #expect(parts[2] != "00f067aa0ba902b7" && parts[2] != "0000000000000000")
        if let continuedTrace {
            #expect(parts[1] == continuedTrace)
            #expect(trace.state == "vendor=1")
        } else {
            #expect(parts[1] != "4bf92f3577b34da6a3ce929d0e0e4736" && parts[1] != String(repeating: "0", count: 32))
            #expect(trace.state == nil)
        }
    }

    @Test("without a client trace, the calls of one request share a trace derived from its id, each a span of its own")
    func traceOfARequest() {
        let first = TraceContext(continuing: nil, state: nil, requestID: "req-7")
        let second = TraceContext(continuing: "garbage", state: "x=1", requestID: "req-7")
        let other = TraceContext(continuing: nil, state: nil, requestID: "req-8")
        #expect(first.traceID == second.traceID)
        #expect(first.traceID != other.traceID)
        #expect(first.spanID != second.spanID)
        #expect(first.traceID.count == 32 && first.traceID.allSatisfy(\.isHexDigit))
        #expect(first.traceID == TraceContext(continuing: nil, state: nil, requestID: "req-7").traceID)
    }
}
