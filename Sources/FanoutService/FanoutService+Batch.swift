import FanoutEngine
import FastCGI

extension FanoutService {
    /// `POST /batch`: validate the whole batch, run it, answer with every result in request order.
    func runBatch(_ request: FastCGIRequest, taskCount: inout Int) async throws(Problem) -> FastCGIResponse {
        try checkJSONBody(request)
        // Shed load before spending time on validation.
        if let problem = acquireBatchSlot() { throw problem }
        defer { releaseBatchSlot() }

        let batch: Batch
        do {
            batch = try decoder.decode(request.body)
        } catch {
            throw .invalidRequest(error)
        }
        taskCount = batch.tasks.count
        let result = await BatchRunner.run(batch) { [self] in cancellationCause }
        return FastCGIResponse(status: 200, headers: [("Content-Type", "application/json")], body: result.jsonBytes())
    }
}
