import AsyncHTTPClient
import FanoutEngine
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

extension HTTPOperation {
    /// What one attempt produced.
    enum AttemptResult: Sendable {
        case response(UpstreamResponse)
        case failed(RetryPolicy.Failure)
    }

    /// A response read whole (within the size cap).
    struct UpstreamResponse: Sendable {
        var status: Int
        var headers: [(name: String, value: String)]
        var contentType: String?
        var body: [UInt8]
    }

    /// Makes the call, retrying as ``RetryPolicy`` says, until it succeeds or gives up.
    ///
    /// - Throws: ``OperationError`` with the last attempt's code; `CancellationError` when the task
    ///   is cancelled (the call in flight is aborted and its connection closed).
    public func run(_ input: Input) async throws -> RawJSON {
        let upstream = input.endpoint.upstream
        let policy = RetryPolicy(maximumAttempts: input.maximumAttempts)
        var attempt = 0
        while true {
            attempt += 1
            let result = try await self.attempt(input)
            let failure: RetryPolicy.Failure
            var lastResponse: UpstreamResponse?
            switch result {
            case .response(let response):
                let accepted = input.successStatuses?.contains(response.status) ?? (200...299).contains(response.status)
                if accepted { return Self.output(response, attempts: attempt) }
                lastResponse = response
                let retryAfter = response.headers.first { $0.name == "retry-after" }.flatMap {
                    RetryPolicy.retryAfter($0.value, now: Date().timeIntervalSince1970)
                }
                failure = .status(response.status, retryAfter: retryAfter)
            case .failed(let attemptFailure):
                failure = attemptFailure
            }
            let timeLeft = TaskDeadline.current.map { $0 - .now }
            let decision = policy.decide(
                after: failure, attempt: attempt, method: input.method, hasIdempotencyKey: input.idempotencyKey != nil,
                timeLeft: timeLeft, random: RetryPolicy.systemRandom)
            switch decision {
            case .retry(let wait):
                if wait > .zero { try await DeadlineScheduler.shared.sleep(for: wait) }
            case .giveUp:
                throw Self.error(failure, upstream: upstream, response: lastResponse, attempts: attempt)
            }
        }
    }

    /// One attempt, holding one of the upstream's connection slots, within the upstream's timeout.
    private func attempt(_ input: Input) async throws -> AttemptResult {
        let endpoint = input.endpoint
        try await endpoint.limiter.acquire()
        defer { endpoint.limiter.release() }
        let timeout = endpoint.upstream.timeout
        // When the task's own deadline comes first, it stops the call (as `timeout`): no timer needed.
        if let deadline = TaskDeadline.current, deadline - .now <= timeout {
            return try await send(input, timeout: timeout)
        }
        return try await withThrowingTaskGroup(of: AttemptResult?.self) { group in
            group.addTask { try await send(input, timeout: timeout) }
            group.addTask {
                try await DeadlineScheduler.shared.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            // The first child to finish decides; `nil` is the timer.
            return try await group.next()!.map { $0 } ?? .failed(.timedOut)
        }
    }

    private func send(_ input: Input, timeout: Duration) async throws -> AttemptResult {
        let upstream = input.endpoint.upstream
        var request = HTTPClientRequest(url: input.url)
        request.method = HTTPMethod(rawValue: input.method)
        request.headers = HTTPHeaders(input.headers)
        if let body = input.body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response: HTTPClientResponse
        do {
            let (seconds, attoseconds) = timeout.components
            let deadline = NIODeadline.now() + .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
            response = try await client.client.execute(request, deadline: deadline)
        } catch {
            return .failed(try Self.classify(error))
        }
        let limit = upstream.maximumResponseBytes
        if let length = response.headers.first(name: "content-length").flatMap({ Int($0) }), length > limit {
            return .failed(.tooLarge)
        }
        var body: [UInt8] = []
        do {
            // Leaving the loop early drops the stream, which closes the connection: the rest of an
            // oversized body is never read.
            for try await chunk in response.body {
                guard body.count + chunk.readableBytes <= limit else { return .failed(.tooLarge) }
                body.append(contentsOf: chunk.readableBytesView)
            }
        } catch {
            return .failed(try Self.classify(error))
        }
        var headers: [(name: String, value: String)] = []
        for name in Self.returnedHeaders {
            let values = response.headers[name]
            if !values.isEmpty { headers.append((name, values.joined(separator: ", "))) }
        }
        return .response(
            UpstreamResponse(
                status: Int(response.status.code), headers: headers,
                contentType: response.headers.first(name: "content-type"), body: body))
    }

    /// The upstream headers a client sees: never `set-cookie` or anything else.
    static let returnedHeaders = ["content-type", "etag", "last-modified", "location", "cache-control", "retry-after"]

    /// What a client error means for the retry policy; cancellation is passed on.
    private static func classify(_ error: any Error) throws -> RetryPolicy.Failure {
        if error is CancellationError || Task.isCancelled { throw CancellationError() }
        if let error = error as? HTTPClientError {
            switch error {
            case .cancelled: throw CancellationError()
            case .deadlineExceeded, .readTimeout, .writeTimeout: return .timedOut
            case .connectTimeout, .tlsHandshakeTimeout: return .connectFailed
            default: return .disconnected
            }
        }
        // Connection refused and unresolvable hosts come from NIO as connection errors.
        if error is NIOConnectionError { return .connectFailed }
        if let error = error as? IOError, [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH].contains(error.errnoCode) {
            return .connectFailed
        }
        if error is ChannelError { return .disconnected }
        return .disconnected
    }

    // MARK: Output

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
