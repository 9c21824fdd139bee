import AsyncHTTPClient
import FanoutEngine
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOConcurrencyHelpers

/// One `http` task's call, from its first attempt to its result: waiting for a connection slot,
/// the request in flight, the wait before a retry. Callbacks throughout, no Swift task: a batch of
/// fifty calls costs fifty small objects, not fifty tasks and their hops between threads.
///
/// Cancelling it (the task's timeout, the batch's deadline or stop, a vanished client, shutdown)
/// aborts the request in flight, which closes its connection: the upstream sees the call go away.
final class HTTPCall: Sendable {
    private enum Phase {
        case idle
        case waitingForSlot(ConnectionLimiter.Ticket)
        case inFlight(HTTPClient.Task<HTTPOperation.UpstreamResponse>)
        case waitingToRetry(DeadlineScheduler.Timer)
        case done

        var isDone: Bool {
            if case .done = self { true } else { false }
        }
    }

    private struct State {
        var phase = Phase.idle
        var attempt = 0
        /// When the attempt in flight was sent, for its duration metric.
        var attemptStarted = ContinuousClock.now
    }

    private let input: HTTPOperation.Input
    private let client: UpstreamClient
    private let deadline: ContinuousClock.Instant?
    private let completion: @Sendable (Result<RawJSON, any Error>) -> Void
    /// Whether cancelling completes the call with `CancellationError` (for a caller that waits
    /// on it); the engine, which cancelled it, expects no completion.
    private let reportsCancellation: Bool
    private let state = NIOLockedValueBox(State())

    /// - Parameter completion: called once with the output or the failure; never after ``cancel()``
    ///   unless `reportsCancellation`.
    init(
        input: HTTPOperation.Input, client: UpstreamClient, deadline: ContinuousClock.Instant?,
        completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void, reportsCancellation: Bool = false
    ) {
        self.input = input
        self.client = client
        self.deadline = deadline
        self.completion = completion
        self.reportsCancellation = reportsCancellation
    }

    /// Makes an attempt: takes a connection slot (waiting for one if need be), then sends.
    func begin() {
        let limiter = input.endpoint.limiter
        // `send` may run before `acquire` returns (a free slot), or on another thread any time
        // after (a slot released): it decides by the phase, which it finds `.idle` or
        // `.waitingForSlot` unless the call was cancelled meanwhile.
        guard let ticket = limiter.acquire({ [self] in send() }) else { return }
        let cancelled = state.withLockedValue { state -> Bool in
            switch state.phase {
            case .idle:
                state.phase = .waitingForSlot(ticket)
                return false
            case .done:
                return true
            default:
                return false  // already granted and sent
            }
        }
        // Cancelled before the ticket was recorded: leave the queue. If the slot was granted in
        // the meantime, `send` sees `.done` and gives it back.
        if cancelled { _ = limiter.cancel(ticket) }
    }

    /// Stops the call.
    func cancel() {
        let phase = state.withLockedValue { state -> Phase in
            defer { state.phase = .done }
            return state.phase
        }
        if reportsCancellation, !phase.isDone { completion(.failure(CancellationError())) }
        switch phase {
        case .waitingForSlot(let ticket):
            // Granted meanwhile: `send` finds `.done` and gives the slot back.
            _ = input.endpoint.limiter.cancel(ticket)
        case .inFlight(let task):
            task.cancel()  // its completion returns the slot
        case .waitingToRetry(let timer):
            DeadlineScheduler.shared.cancel(timer)
        case .idle, .done:
            break
        }
    }

    /// Sends one attempt; called holding a connection slot.
    private func send() {
        let upstream = input.endpoint.upstream
        let proceed = state.withLockedValue { state -> Bool in
            switch state.phase {
            case .idle, .waitingForSlot:
                state.attempt += 1
                state.attemptStarted = .now
                return true
            default:
                return false
            }
        }
        guard proceed else {
            input.endpoint.limiter.release()
            return
        }
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(
                url: input.url, method: HTTPMethod(rawValue: input.method), headers: HTTPHeaders(input.headers),
                body: input.body.map { .bytes($0) })
        } catch {
            // Unreachable: the URL was built from a validated base URL and an encoded path.
            input.endpoint.limiter.release()
            finish(.failure(OperationError(code: "operation_failed", message: "the request could not be built")))
            return
        }
        let (seconds, attoseconds) = upstream.timeout.components
        let attemptDeadline = NIODeadline.now() + .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        // The callbacks on this event loop when the slot was handed over by a call ending here,
        // so that they need no hop between threads. Not the connection too (.delegateAndChannel):
        // the pool closes such event-loop-bound connections when idle, one per few calls.
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? client.group.next()
        let task = client.client.execute(
            request: request, delegate: ResponseCollector(limit: upstream.maximumResponseBytes),
            eventLoop: .delegate(on: loop), deadline: attemptDeadline)
        let inFlight = state.withLockedValue { state -> Bool in
            guard case .done = state.phase else {
                state.phase = .inFlight(task)
                return true
            }
            return false
        }
        if !inFlight { task.cancel() }
        task.futureResult.whenComplete { [self] result in
            input.endpoint.limiter.release()
            attemptEnded(result)
        }
    }

    private func attemptEnded(_ result: Result<HTTPOperation.UpstreamResponse, any Error>) {
        let (attempt, started) = state.withLockedValue { ($0.attempt, $0.attemptStarted) }
        let failure: RetryPolicy.Failure
        var lastResponse: HTTPOperation.UpstreamResponse?
        let endpoint = input.endpoint
        switch result {
        case .success(let response):
            endpoint.attemptEnded(String(response.status), after: .now - started)
            let accepted =
                input.successStatuses?.contains(response.status) ?? (200...299).contains(response.status)
            if accepted {
                finish(.success(HTTPOperation.output(response, attempts: attempt)))
                return
            }
            lastResponse = response
            let retryAfter = response.headers.first { $0.name == "retry-after" }.flatMap {
                RetryPolicy.retryAfter($0.value, now: Date().timeIntervalSince1970)
            }
            failure = .status(response.status, retryAfter: retryAfter)
        case .failure(let error):
            guard let classified = Self.classify(error) else {
                endpoint.attemptEnded("cancelled", after: .now - started)
                return  // cancelled: nobody waits
            }
            endpoint.attemptEnded(classified.metricLabel, after: .now - started)
            failure = classified
        }
        let decision = RetryPolicy(maximumAttempts: input.maximumAttempts).decide(
            after: failure, attempt: attempt, method: input.method, hasIdempotencyKey: input.idempotencyKey != nil,
            timeLeft: deadline.map { $0 - .now }, random: RetryPolicy.systemRandom)
        switch decision {
        case .giveUp:
            finish(
                .failure(
                    HTTPOperation.error(
                        failure, upstream: input.endpoint.upstream, response: lastResponse, attempts: attempt)))
        case .retry(let wait):
            endpoint.retries.increment()
            let timer = DeadlineScheduler.shared.schedule(at: .now + wait) { [self] in retry() }
            let waiting = state.withLockedValue { state -> Bool in
                guard case .done = state.phase else {
                    state.phase = .waitingToRetry(timer)
                    return true
                }
                return false
            }
            if !waiting { DeadlineScheduler.shared.cancel(timer) }
        }
    }

    private func retry() {
        let ready = state.withLockedValue { state -> Bool in
            guard case .waitingToRetry = state.phase else { return false }
            state.phase = .idle
            return true
        }
        if ready { begin() }
    }

    private func finish(_ result: Result<RawJSON, any Error>) {
        let first = state.withLockedValue { state -> Bool in
            if case .done = state.phase { return false }
            state.phase = .done
            return true
        }
        if first { completion(result) }
    }

    /// What an attempt's error means for the retry policy; `nil` when the call was cancelled.
    static func classify(_ error: any Error) -> RetryPolicy.Failure? {
        if error is ResponseCollector.TooLarge { return .tooLarge }
        if let error = error as? HTTPClientError {
            switch error {
            case .cancelled: return nil
            case .deadlineExceeded, .readTimeout, .writeTimeout: return .timedOut
            case .connectTimeout, .tlsHandshakeTimeout: return .connectFailed
            default: return .disconnected
            }
        }
        // Connection refused and unreachable hosts come from NIO as connection errors.
        if error is NIOConnectionError { return .connectFailed }
        if let error = error as? IOError, [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH].contains(error.errnoCode) {
            return .connectFailed
        }
        return .disconnected
    }
}

/// Reads a response into memory, failing the request as soon as it passes the size cap: the
/// rest is never read and the connection is closed.
// @unchecked: AsyncHTTPClient calls a delegate's methods one at a time on the request's event loop.
final class ResponseCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = HTTPOperation.UpstreamResponse

    struct TooLarge: Error {}

    private let limit: Int
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()

    init(limit: Int) {
        self.limit = limit
    }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.head = head
        if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > limit {
            return task.eventLoop.makeFailedFuture(TooLarge())
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        guard body.readableBytes + buffer.readableBytes <= limit else {
            return task.eventLoop.makeFailedFuture(TooLarge())
        }
        var buffer = buffer
        body.writeBuffer(&buffer)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        guard let head else { throw HTTPClientError.remoteConnectionClosed }
        var headers: [(name: String, value: String)] = []
        for name in HTTPOperation.returnedHeaders {
            let values = head.headers[name]
            if !values.isEmpty { headers.append((name, values.joined(separator: ", "))) }
        }
        return Response(
            status: Int(head.status.code), headers: headers, contentType: head.headers.first(name: "content-type"),
            body: Array(body.readableBytesView))
    }
}
