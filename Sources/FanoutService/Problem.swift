import FanoutEngine
import FastCGI

/// An error answered with an RFC 9457 problem document; the service layer's one error type.
///
/// `type` is a URI reference under `/problems/`, stable and documented in the README.
public struct Problem: Error, Sendable {
    /// The HTTP status.
    public var status: Int
    /// The last segment of the problem type, such as `invalid-request`.
    public var type: String
    /// A short summary that does not change between occurrences.
    public var title: String
    /// This occurrence, for humans.
    public var detail: String
    /// Validation problems, one per issue found (`errors` member), if any.
    public var issues: [ValidationIssue] = []
    /// An operation's error code (`code` member), if any.
    public var code: String?
    /// Extra response headers, such as `Allow` or `Retry-After`.
    public var headers: [(name: String, value: String)] = []

    /// The problem document as a response.
    public func response() -> FastCGIResponse {
        var writer = JSONWriter()
        writer.raw(#"{"type":"#)
        writer.string("/problems/" + type)
        writer.raw(#","title":"#)
        writer.string(title)
        writer.raw(#","status":"#)
        writer.integer(status)
        writer.raw(#","detail":"#)
        writer.string(detail)
        if let code {
            writer.raw(#","code":"#)
            writer.string(code)
        }
        if !issues.isEmpty {
            writer.raw(#","errors":["#)
            for (index, issue) in issues.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.raw(#"{"task":"#)
                switch issue.task {
                case .id(let id): writer.string(id)
                case .index(let index): writer.integer(index)
                case nil: writer.raw("null")
                }
                writer.raw(#","field":"#)
                writer.string(issue.field)
                writer.raw(#","message":"#)
                writer.string(issue.message)
                writer.raw("}")
            }
            writer.raw("]")
        }
        writer.raw("}")
        return FastCGIResponse(
            status: status, headers: [("Content-Type", "application/problem+json")] + headers, body: writer.bytes)
    }
}

extension Problem {
    static func notFound(_ detail: String) -> Problem {
        Problem(status: 404, type: "not-found", title: "Not found", detail: detail)
    }

    static func methodNotAllowed(_ method: String, allowed: String) -> Problem {
        Problem(
            status: 405, type: "method-not-allowed", title: "Method not allowed",
            detail: "\(method) is not allowed here; use \(allowed)", headers: [("Allow", allowed)])
    }

    static func unsupportedMediaType(_ contentType: String?) -> Problem {
        Problem(
            status: 415, type: "unsupported-media-type", title: "Unsupported media type",
            detail: "the body must be sent as application/json (UTF-8); got \(contentType ?? "no Content-Type")")
    }

    static func bodyTooLarge(limit: Int) -> Problem {
        Problem(
            status: 413, type: "body-too-large", title: "Request body too large",
            detail: "the request body exceeds the limit of \(limit) bytes")
    }

    static func invalidRequest(_ error: BatchValidationError) -> Problem {
        let count = error.issues.count
        return Problem(
            status: 400, type: "invalid-request", title: "Invalid request",
            detail: error.isMalformed
                ? "the body is not valid JSON"
                : "the request has \(count) problem\(count == 1 ? "" : "s"); nothing was run",
            issues: error.issues)
    }

    static func unauthenticated() -> Problem {
        Problem(
            status: 401, type: "unauthenticated", title: "No client identity",
            detail: "this server tells clients apart by the identity nginx establishes; the request had none")
    }

    static func clientOverloaded(limit: Int, retryAfterSeconds: Int) -> Problem {
        Problem(
            status: 429, type: "too-many-requests", title: "Too many batches for this client",
            detail: "this client already has \(limit) batches in flight; retry after \(retryAfterSeconds) s",
            headers: [("Retry-After", "\(retryAfterSeconds)")])
    }

    static func clientTooManyJobs(limit: Int, retryAfterSeconds: Int) -> Problem {
        Problem(
            status: 429, type: "too-many-jobs", title: "Too many jobs for this client",
            detail: "this client already has \(limit) jobs queued or running; retry after \(retryAfterSeconds) s",
            headers: [("Retry-After", "\(retryAfterSeconds)")])
    }

    static func overloaded(retryAfterSeconds: Int) -> Problem {
        Problem(
            status: 503, type: "overloaded", title: "Server at capacity",
            detail: "too many batches are in flight; retry after \(retryAfterSeconds) s",
            headers: [("Retry-After", "\(retryAfterSeconds)")])
    }

    static func shuttingDown(retryAfterSeconds: Int) -> Problem {
        Problem(
            status: 503, type: "shutting-down", title: "Server shutting down",
            detail: "the server is draining for shutdown and accepts no new work",
            headers: [("Retry-After", "\(retryAfterSeconds)")])
    }
}

extension Problem {
    static func jobNotFound(_ id: String) -> Problem {
        Problem(
            status: 404, type: "job-not-found", title: "Job not found",
            detail: "no job '\(id)'; it never existed or its retention time has passed")
    }

    static func jobFinished(_ id: String, status: String) -> Problem {
        Problem(
            status: 409, type: "job-finished", title: "Job already finished",
            detail: "job '\(id)' already finished (\(status)); there is nothing to cancel")
    }

    static func idempotencyKeyReused(_ key: String) -> Problem {
        Problem(
            status: 422, type: "idempotency-key-reused", title: "Idempotency key reused",
            detail: "the Idempotency-Key '\(key)' was already used with a different body")
    }

    static func invalidIdempotencyKey() -> Problem {
        Problem(
            status: 400, type: "invalid-request", title: "Invalid request",
            detail: "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
            issues: [
                ValidationIssue(
                    task: nil, field: "Idempotency-Key", message: "must be 1 to 255 visible ASCII characters")
            ])
    }

    static func tooManyJobs(limit: Int, retryAfterSeconds: Int) -> Problem {
        Problem(
            status: 503, type: "too-many-jobs", title: "Too many jobs",
            detail: "\(limit) jobs are already queued or running; retry after \(retryAfterSeconds) s",
            headers: [("Retry-After", "\(retryAfterSeconds)")])
    }

    static func jobStoreUnavailable() -> Problem {
        Problem(
            status: 503, type: "job-store-unavailable", title: "Job store unavailable",
            detail: "the job store could not be reached; retry shortly", headers: [("Retry-After", "1")])
    }

    static func asyncUnavailable() -> Problem {
        Problem(
            status: 404, type: "not-found", title: "Not found",
            detail: "asynchronous jobs are not enabled on this server")
    }
}
