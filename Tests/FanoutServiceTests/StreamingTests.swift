import FanoutService
import FastCGI
import Logging
import Synchronization
import Testing

/// What a streamed response wrote, and when.
private final class StreamRecorder: Sendable {
    private let pieces = Mutex<[(at: ContinuousClock.Instant, bytes: [UInt8])]>([])

    var writer: FastCGIResponseWriter {
        FastCGIResponseWriter { bytes in
            self.pieces.withLock { $0.append((.now, bytes)) }
            return true
        }
    }

    /// Every line written, with when it was written.
    var lines: [(at: ContinuousClock.Instant, text: String)] {
        pieces.withLock { pieces in
            pieces.flatMap { piece in
                String(decoding: piece.bytes, as: UTF8.self).split(separator: "\n").map { (piece.at, String($0)) }
            }
        }
    }
}

private func ndjsonRequest(_ body: String, accept: String = "application/x-ndjson") -> FastCGIRequest {
    FastCGIRequest(
        parameters: [
            "REQUEST_METHOD": "POST", "DOCUMENT_URI": "/batch", "CONTENT_TYPE": "application/json",
            "HTTP_ACCEPT": accept,
        ],
        body: Array(body.utf8))
}

/// A service of its own per test: tests run in parallel, and some count batches in flight.
private func makeService() -> FanoutService {
    FanoutService(
        configuration: FanoutService.Configuration(),
        logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
}

@Suite("Streamed results")
struct StreamingTests {
    @Test("each result is written as it finishes, in completion order, then the summary")
    func streamsInCompletionOrder() async throws {
        let service = makeService()
        let start = ContinuousClock.now
        let response = await service.handle(
            ndjsonRequest(
                #"""
                {"tasks": [
                  {"id": "slow", "op": "sleep", "input": {"ms": 1500}},
                  {"id": "fast", "op": "sleep", "input": {"ms": 50}},
                  {"id": "now", "op": "echo", "input": 1},
                  {"id": "bad", "op": "fail", "input": {"code": "nope"}, "depends_on": ["now"]},
                  {"id": "never", "op": "echo", "depends_on": ["bad"]}
                ]}
                """#))
        #expect(response.status == 200)
        #expect(response.headers.contains { $0 == ("Content-Type", "application/x-ndjson") })
        #expect(response.headers.contains { $0 == ("X-Accel-Buffering", "no") })
        let stream = try #require(response.stream)
        let recorder = StreamRecorder()
        await stream(recorder.writer)
        let lines = recorder.lines
        let ids = lines.dropLast().map { line in
            line.text.split(separator: "\"")[3]  // {"id":"<id>",...
        }
        #expect(ids == ["now", "bad", "never", "fast", "slow"])
        #expect(lines[1].text.contains(#""status":"failed""#))
        #expect(lines[2].text.contains(#""status":"skipped""#))
        // The 50 ms task's line was written long before the 1500 ms task ended (a wide margin: the
        // tests also run under sanitizers, several times slower).
        #expect(lines[3].at - start < .milliseconds(1000))
        #expect(lines[4].at - start >= .milliseconds(1500))
        let last = try #require(lines.last).text
        #expect(last.hasPrefix(#"{"status":"partial","summary":{"total":5,"succeeded":3,"failed":1,"skipped":1,"#))
        #expect(service.batchesInFlight == 0)
    }

    @Test("an invalid batch is still an ordinary problem response")
    func validationBeforeStreaming() async {
        let response = await makeService().handle(ndjsonRequest(#"{"tasks": [{"id": "a", "op": "nope"}]}"#))
        #expect(response.status == 400)
        #expect(response.stream == nil)
        #expect(response.headers.contains { $0 == ("Content-Type", "application/problem+json") })
    }

    @Test("cancelling the stream (the client left) cancels the tasks not finished")
    func cancellationStopsTheBatch() async throws {
        let service = makeService()
        let response = await service.handle(
            ndjsonRequest(
                #"{"tasks": [{"id": "a", "op": "echo"}, {"id": "b", "op": "sleep", "input": {"ms": 10000}}]}"#))
        let stream = try #require(response.stream)
        let recorder = StreamRecorder()
        let start = ContinuousClock.now
        let task = Task { await stream(recorder.writer) }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        await task.value
        #expect(ContinuousClock.now - start < .seconds(3))
        let lines = recorder.lines.map(\.text)
        #expect(lines.count == 3)
        #expect(lines[1].contains(#""id":"b","status":"cancelled""#))
        #expect(service.batchesInFlight == 0)
    }

    @Test(
        "Accept selects streaming only for application/x-ndjson with a nonzero quality",
        arguments: [
            ("application/x-ndjson", true),
            ("application/json, application/x-ndjson;q=0.5", true),
            ("Application/X-NDJSON ; q=1", true),
            ("application/x-ndjson;q=0", false),
            ("application/json", false),
            ("*/*", false),
        ])
    func acceptHeader(accept: String, streams: Bool) async {
        let response = await makeService().handle(
            ndjsonRequest(#"{"tasks": [{"id": "a", "op": "echo"}]}"#, accept: accept))
        #expect((response.stream != nil) == streams)
        if let stream = response.stream { await stream(StreamRecorder().writer) }
    }
}
