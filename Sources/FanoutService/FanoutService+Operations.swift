import FanoutEngine
import FastCGI

extension FanoutService {
    /// `POST /ops/{name}`: run one operation with the body as its input.
    ///
    /// Statuses: 200 with the output; 400 for invalid input; 422 when the operation fails (the
    /// problem's `code` is the task error code); 504 when it exceeds the task time limit.
    func runOperation(named name: String, _ request: FastCGIRequest) async throws(Problem) -> FastCGIResponse {
        guard let operation = registry[name] else {
            throw .notFound("unknown operation '\(name)'; GET /ops lists them")
        }
        let client = try client(of: request)
        try checkJSONBody(request)
        if let problem = acquireBatchSlot(client: client) { throw problem }
        defer { releaseBatchSlot(client: client) }

        let input: RawJSON
        if request.body.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            input = .null
        } else {
            do {
                input = try RawJSON(validating: request.body, maximumDepth: configuration.limits.maximumDepth)
            } catch {
                let issue = ValidationIssue(task: nil, field: "body", message: "malformed JSON: \(error)")
                throw .invalidRequest(BatchValidationError(issues: [issue], isMalformed: true))
            }
        }
        let work: PreparedTask
        do {
            work = try operation.prepare(input, context: requestContext(request))
        } catch {
            let issue = ValidationIssue(task: nil, field: InputError.field(error.path), message: error.message)
            throw .invalidRequest(BatchValidationError(issues: [issue], isMalformed: false))
        }

        let timeout = Duration.milliseconds(configuration.limits.maximumTaskTimeoutMilliseconds)
        let started = ContinuousClock.now
        let outcome = await TaskDeadline.$current.withValue(.now + timeout) {
            await TaskExecutor.run(work, timeout: operation.isInstant ? nil : timeout)
        }
        let status: TaskStatus =
            switch outcome {
            case .succeeded: .succeeded
            case .failed: .failed
            case .interrupted: .cancelled
            }
        metrics.taskFinished(operation: name, status: status, duration: ContinuousClock.now - started)
        switch outcome {
        case .succeeded(let output):
            return FastCGIResponse(
                status: 200, headers: [("Content-Type", "application/json")], body: Array(output.bytes))
        case .failed(let error) where error.code == "timeout":
            throw Problem(
                status: 504, type: "operation-timeout", title: "Operation timed out", detail: error.message,
                code: error.code)
        case .failed(let error):
            throw Problem(
                status: 422, type: "operation-failed", title: "Operation failed", detail: error.message,
                code: error.code)
        case .interrupted:
            throw .shuttingDown(retryAfterSeconds: configuration.retryAfterSeconds)
        }
    }
}
