import FanoutEngine
import Foundation
import NIOConcurrencyHelpers

extension HTTPOperation {
    /// A response read whole (within the size cap).
    struct UpstreamResponse: Sendable {
        var status: Int
        var headers: [(name: String, value: String)]
        var contentType: String?
        var body: [UInt8]
    }

    /// Starts the call (see ``HTTPCall``), retrying as ``RetryPolicy`` says until it succeeds or
    /// gives up; a retry that would wait past `deadline` is not made.
    public func start(
        _ input: Input, deadline: ContinuousClock.Instant,
        completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void
    ) -> OperationHandle? {
        let call = HTTPCall(input: input, client: client, deadline: deadline, completion: completion)
        call.begin()
        return OperationHandle { call.cancel() }
    }

    /// The call for `POST /ops/http`, and for any caller outside a batch: as
    /// ``start(_:deadline:completion:)``, with the deadline of ``TaskDeadline``.
    ///
    /// - Throws: ``OperationError`` with the last attempt's code; `CancellationError` when the task
    ///   is cancelled (the call in flight is aborted and its connection closed).
    public func run(_ input: Input) async throws -> RawJSON {
        let call = NIOLockedValueBox<HTTPCall?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RawJSON, any Error>) in
                let started = HTTPCall(
                    input: input, client: client, deadline: TaskDeadline.current,
                    completion: { continuation.resume(with: $0) }, reportsCancellation: true)
                call.withLockedValue { $0 = started }
                started.begin()
                // Cancelled before the call was there to hear it.
                if Task.isCancelled { started.cancel() }
            }
        } onCancel: {
            call.withLockedValue { $0 }?.cancel()
        }
    }

    // MARK: Output

    /// The upstream headers a client sees: never `set-cookie` or anything else.
    static let returnedHeaders = ["content-type", "etag", "last-modified", "location", "cache-control", "retry-after"]

    /// `{"status", "headers", "body", ["body_encoding"], "attempts"}`.
    static func output(_ response: UpstreamResponse, attempts: Int) -> RawJSON {
        var writer = JSONWriter(reservingCapacity: response.body.count + 128)
        writer.raw("{")
        writeResponse(response, to: &writer)
        writer.raw(#","attempts":"#)
        writer.integer(attempts)
        writer.raw("}")
        return RawJSON(writtenBy: writer)
    }

    /// `"status":…,"headers":{…},"body":…` and `"body_encoding"` for a body that is not JSON.
    private static func writeResponse(_ response: UpstreamResponse, to writer: inout JSONWriter) {
        writer.raw(#""status":"#)
        writer.integer(response.status)
        writer.raw(#","headers":{"#)
        for (index, header) in response.headers.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.string(header.name)
            writer.raw(":")
            writer.string(header.value)
        }
        writer.raw(#"},"body":"#)
        if response.body.isEmpty {
            writer.raw("null")
        } else if isJSON(response.contentType), let json = RawJSON(validatingBytes: response.body) {
            writer.json(json)
        } else if let text = String(validating: response.body, as: UTF8.self) {
            writer.string(text)
            writer.raw(#","body_encoding":"text""#)
        } else {
            writer.string(Data(response.body).base64EncodedString())
            writer.raw(#","body_encoding":"base64""#)
        }
    }

    /// `application/json` or any `+json` type.
    private static func isJSON(_ contentType: String?) -> Bool {
        guard let type = contentType?.split(separator: ";").first?.trimmingSpaces().lowercased() else { return false }
        return type == "application/json" || type.hasSuffix("+json")
    }

    static func error(
        _ failure: RetryPolicy.Failure, upstream: Upstream, response: UpstreamResponse?, attempts: Int
    ) -> OperationError {
        let code: String
        let message: String
        switch failure {
        case .status(let status, _):
            code = "upstream_status"
            message = "upstream '\(upstream.name)' answered \(status)"
        case .connectFailed:
            code = "upstream_unreachable"
            message = "could not connect to upstream '\(upstream.name)'"
        case .disconnected:
            code = "upstream_disconnected"
            message = "upstream '\(upstream.name)' closed the connection before its response was complete"
        case .timedOut:
            let (seconds, attoseconds) = upstream.timeout.components
            code = "upstream_timeout"
            message =
                "upstream '\(upstream.name)' did not answer within \(seconds * 1000 + attoseconds / 1_000_000_000_000_000) ms"
        case .tooLarge:
            code = "response_too_large"
            message = "the response of upstream '\(upstream.name)' is larger than \(upstream.maximumResponseBytes) bytes"
        }
        var writer = JSONWriter()
        writer.raw(#"{"attempts":"#)
        writer.integer(attempts)
        if let response {
            writer.raw(#","response":{"#)
            writeResponse(response, to: &writer)
            writer.raw("}")
        }
        writer.raw("}")
        return OperationError(code: code, message: message, details: RawJSON(writtenBy: writer))
    }
}
