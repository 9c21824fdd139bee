import FanoutEngine
import FanoutJobs
import FastCGI

extension FanoutService {
    /// `POST /batch` with `Prefer: respond-async`: queue the validated batch and answer 202 with
    /// the job, or, for a repeated `Idempotency-Key` with the same body, the job made the first time.
    /// `key` is that header, already checked by `runBatch`.
    func submitJob(
        _ batch: Batch, body: [UInt8], idempotencyKey key: String?, context: RequestContext, client: String?,
        jobs: JobManager
    ) async throws(Problem) -> FastCGIResponse {
        let submission: JobStore.Submission
        do {
            submission = try await jobs.submit(
                body: body, taskCount: batch.tasks.count, idempotencyKey: key, context: context,
                client: client)
        } catch {
            logger.error("job store failed", metadata: ["error": "\(error)"])
            throw .jobStoreUnavailable()
        }
        switch submission {
        case .created(let job):
            return accepted(job, replayed: false)
        case .replayed(let job):
            return accepted(job, replayed: true)
        case .keyReused:
            throw .idempotencyKeyReused(key ?? "")
        case .full:
            throw .tooManyJobs(
                limit: jobs.configuration.maximumPending, retryAfterSeconds: configuration.retryAfterSeconds)
        case .clientFull:
            throw .clientTooManyJobs(
                limit: jobs.configuration.maximumPendingPerClient, retryAfterSeconds: configuration.retryAfterSeconds)
        }
    }

    /// The 202 answer to a submission, and to its idempotent repeats.
    private func accepted(_ job: Job, replayed: Bool) -> FastCGIResponse {
        var headers: [(name: String, value: String)] = [
            ("Content-Type", "application/json"), ("Location", "/batch/\(job.id)"),
            ("Retry-After", "\(configuration.retryAfterSeconds)"), ("Preference-Applied", "respond-async"),
            ("Cache-Control", "no-store"),
        ]
        if replayed { headers.append(("Idempotent-Replayed", "true")) }
        return FastCGIResponse(status: 202, headers: headers, body: job.jsonBytes())
    }

    /// `GET` and `DELETE /batch/{id}`.
    ///
    /// With clients kept apart, another client's job is not found, exactly as an unknown id.
    func jobResource(_ id: String, _ request: FastCGIRequest) async throws(Problem) -> FastCGIResponse {
        guard let jobs else { throw .asyncUnavailable() }
        let client = try client(of: request)
        switch request.method {
        case "GET", "HEAD":
            let job: Job?
            do {
                job = try await jobs.job(id, client: client)
            } catch {
                logger.error("job store failed", metadata: ["error": "\(error)"])
                throw .jobStoreUnavailable()
            }
            guard let job else { throw .jobNotFound(id) }
            return document(job, status: 200)
        case "DELETE":
            let outcome: JobStore.CancelOutcome
            do {
                outcome = try await jobs.cancel(id, client: client)
            } catch {
                logger.error("job store failed", metadata: ["error": "\(error)"])
                throw .jobStoreUnavailable()
            }
            switch outcome {
            case .notFound:
                throw .jobNotFound(id)
            case .cancelled(let job):
                return document(job, status: 200)
            case .requested(let job):
                // Still stopping in another process: the client polls for the end.
                return document(job, status: 202)
            case .finished(let job):
                // Cancelling a cancelled job again changes nothing: answer as the first time.
                if job.status == .cancelled { return document(job, status: 200) }
                throw .jobFinished(id, status: job.status.rawValue)
            }
        default:
            throw .methodNotAllowed(request.method, allowed: "GET, HEAD, DELETE")
        }
    }

    private func document(_ job: Job, status: Int) -> FastCGIResponse {
        var headers: [(name: String, value: String)] = [
            ("Content-Type", "application/json"), ("Cache-Control", "no-store"),
        ]
        if !job.status.isFinished { headers.append(("Retry-After", "\(configuration.retryAfterSeconds)")) }
        return FastCGIResponse(status: status, headers: headers, body: job.jsonBytes())
    }

    /// Whether a `Prefer` header asks for `respond-async` (RFC 7240).
    static func prefersAsync(_ prefer: String?) -> Bool {
        guard let prefer else { return false }
        return prefer.split(separator: ",").contains { preference in
            preference.split(separator: ";").first?.trimmingSpaces().lowercased() == "respond-async"
        }
    }

    /// 1 to 255 visible ASCII characters.
    static func isValidIdempotencyKey(_ key: String) -> Bool {
        let bytes = key.utf8
        return (1...255).contains(bytes.count) && bytes.allSatisfy { (0x21...0x7E).contains($0) }
    }

    /// A syntactically possible job id: what `JobStore` makes (32 lowercase hex digits).
    static func isJobId(_ text: Substring) -> Bool {
        text.utf8.count == 32 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}
