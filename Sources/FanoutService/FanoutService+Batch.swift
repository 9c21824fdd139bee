import FanoutEngine
import FastCGI

extension FanoutService {
    /// `POST /batch`: validate the whole batch, run it, answer with every result in request order;
    /// or, when the client accepts `application/x-ndjson`, stream each result as it finishes; or,
    /// with `Prefer: respond-async` (which wins over streaming), queue it as a job.
    ///
    /// A batch whose every operation runs synchronously is answered at once; one that may wait, and
    /// a job's submission, later.
    func runBatch(_ request: FastCGIRequest, taskCount: inout Int) throws(Problem) -> Routed {
        let client = try client(of: request)
        try checkJSONBody(request)
        // Checked whether or not the batch is queued: a key that could never work is a client's
        // mistake to report, not to ignore.
        let idempotencyKey = request.header("Idempotency-Key")
        if let idempotencyKey, !Self.isValidIdempotencyKey(idempotencyKey) { throw .invalidIdempotencyKey() }
        // Shed load before spending time on validation.
        if let problem = acquireBatchSlot(client: client) { throw problem }
        // Released before this returns, unless handed over to what answers later.
        var slotHandedOver = false
        defer { if !slotHandedOver { releaseBatchSlot(client: client) } }

        let context = requestContext(request)
        let batch: Batch
        do {
            batch = try decoder.decode(request.body, context: context)
        } catch {
            throw .invalidRequest(error)
        }
        taskCount = batch.tasks.count
        if let jobs, Self.prefersAsync(request.header("Prefer")) {
            slotHandedOver = true
            return .later { [self] in
                defer { releaseBatchSlot(client: client) }
                return try await submitJob(
                    batch, body: request.body, idempotencyKey: idempotencyKey, context: context, client: client,
                    jobs: jobs)
            }
        }
        if Self.acceptsNDJSON(request.header("Accept")) {
            slotHandedOver = true
            return .response(streamBatch(batch, client: client))
        }
        if batch.runsAtOnce {
            let result = BatchRunner.runAtOnce(batch)
            metrics.batchFinished(batch, result)
            return .response(Self.batchResponse(result))
        }
        slotHandedOver = true
        return .later { [self] in
            defer { releaseBatchSlot(client: client) }
            let result = await BatchRunner.run(batch) { [self] in cancellationCause }
            metrics.batchFinished(batch, result)
            return Self.batchResponse(result)
        }
    }

    private static func batchResponse(_ result: BatchResult) -> FastCGIResponse {
        FastCGIResponse(status: 200, headers: [("Content-Type", "application/json")], body: result.jsonBytes())
    }

    /// The streamed answer: one line per task result as it finishes, then a status and summary line.
    ///
    /// Validation has already passed, so the stream always starts with 200. A client that goes
    /// away cancels the batch: the transport cancels this task on hang-up or a failed write.
    private func streamBatch(_ batch: Batch, client: String?) -> FastCGIResponse {
        FastCGIResponse(
            status: 200,
            headers: [
                ("Content-Type", "application/x-ndjson"), ("Cache-Control", "no-store"),
                // Whatever the location's proxy buffering, nginx passes each line on at once.
                ("X-Accel-Buffering", "no"),
            ]
        ) { [self] writer in
            defer { releaseBatchSlot(client: client) }
            let result = await BatchRunner.run(batch) { [self] in
                cancellationCause
            } onResults: { results in
                await writer.write(BatchResult.ndjsonLines(results))
            }
            metrics.batchFinished(batch, result)
            await writer.write(result.summaryJSONBytes() + [UInt8(ascii: "\n")])
        }
    }

    /// Whether an `Accept` header asks for `application/x-ndjson` (with a nonzero quality).
    static func acceptsNDJSON(_ accept: String?) -> Bool {
        guard let accept else { return false }
        for range in accept.split(separator: ",") {
            let parts = range.split(separator: ";").map { $0.trimmingSpaces().lowercased() }
            guard parts.first == "application/x-ndjson" else { continue }
            let zeroQuality = parts.dropFirst().contains { $0.hasPrefix("q=") && (Double($0.dropFirst(2)) ?? 1) == 0 }
            if !zeroQuality { return true }
        }
        return false
    }
}
