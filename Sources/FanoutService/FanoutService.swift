import FanoutEngine
import FanoutJobs
import FastCGI
import Logging
import NIOConcurrencyHelpers

/// The HTTP face of Fanout: routes requests, maps outcomes to status codes and problem
/// documents, and sheds load past the configured number of batches in flight.
public final class FanoutService: FastCGIHandler {
    private struct State {
        var batchesInFlight = 0
        /// Batches in flight per client, when clients are kept apart.
        var clientBatches: [String: Int] = [:]
        var draining = false
        var shuttingDown = false
    }

    let configuration: Configuration
    let registry: OperationRegistry
    let decoder: BatchDecoder
    let logger: Logger
    /// Runs asynchronous batches; `nil` when they are not enabled (`Prefer: respond-async` is
    /// then ignored, and `/batch/{id}` is not found).
    let jobs: JobManager?
    private let state = NIOLockedValueBox(State())
    /// The `GET /ops` body; the registry never changes, so it is encoded once.
    let operationsListing: [UInt8]
    /// The request headers some operation reads (see ``Operation/requestHeaderNames``).
    let requestHeaderNames: [String]
    /// What `GET /metrics` serves.
    public let metrics: ServiceMetrics

    /// Creates the service.
    ///
    /// - Parameters:
    ///   - configuration: limits and load shedding.
    ///   - registry: the operations offered; the built-ins when omitted.
    ///   - logger: receives one line per request.
    ///   - jobs: the store of asynchronous batches and its configuration, to enable them.
    ///   - metrics: where requests, batches and jobs are counted.
    public init(
        configuration: Configuration, registry: OperationRegistry? = nil, logger: Logger,
        jobs: (store: any JobStore, configuration: JobManager.Configuration)? = nil,
        metrics: ServiceMetrics = ServiceMetrics()
    ) {
        self.metrics = metrics
        self.configuration = configuration
        let registry = registry ?? .builtIns(limits: configuration.limits)
        self.registry = registry
        let decoder = BatchDecoder(registry: registry, limits: configuration.limits)
        self.decoder = decoder
        self.logger = logger
        self.jobs = jobs.map {
            JobManager(
                store: $0.store, decoder: decoder, configuration: $0.configuration, logger: logger,
                metrics: JobManager.Metrics(factory: metrics.factory, batchFinished: metrics.batchFinished))
        }
        operationsListing = Self.encodeListing(registry)
        requestHeaderNames = Set(registry.all.flatMap(\.requestHeaderNames)).sorted()
    }

    /// What operations may know of `request`: its id, its trace context and the headers they
    /// asked for.
    func requestContext(_ request: FastCGIRequest) -> RequestContext {
        var headers: [String: String] = [:]
        for name in requestHeaderNames {
            if let value = request.header(name) { headers[name] = value }
        }
        return RequestContext(
            requestID: request.parameters["REQUEST_ID"], headers: headers,
            traceparent: request.parameters["HTTP_TRACEPARENT"], tracestate: request.parameters["HTTP_TRACESTATE"])
    }

    /// The request with its id in `REQUEST_ID`: nginx's `$request_id` as the configurations here
    /// pass it, else the client's `X-Request-Id` when it is a sane token, else a new one.
    static func identified(_ request: FastCGIRequest) -> (request: FastCGIRequest, id: String) {
        if let id = request.parameters["REQUEST_ID"], isValidRequestID(id) { return (request, id) }
        var identified = request
        let id =
            request.parameters["HTTP_X_REQUEST_ID"].flatMap { isValidRequestID($0) ? $0 : nil }
            ?? TraceContext.randomHex(bytes: 16)
        identified.parameters["REQUEST_ID"] = id
        return (identified, id)
    }

    /// 1 to 200 visible ASCII characters: what can go in a header, a log line and a job document
    /// unchanged.
    static func isValidRequestID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 200 && id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") }
    }

    // MARK: Lifecycle

    /// Batches and direct operation calls running now.
    public var batchesInFlight: Int { state.withLockedValue { $0.batchesInFlight } }

    /// Whether the service is draining for shutdown.
    public var isDraining: Bool { state.withLockedValue { $0.draining } }

    /// Starts draining: health checks answer 503 and new work is refused; running batches go on.
    public func beginDraining() {
        state.withLockedValue { $0.draining = true }
    }

    /// Marks that running batches are about to be cancelled for shutdown, so their unfinished
    /// tasks report `shutdown` rather than `cancelled`.
    public func markShuttingDown() {
        state.withLockedValue {
            $0.draining = true
            $0.shuttingDown = true
        }
    }

    var cancellationCause: CancellationCause {
        state.withLockedValue { $0.shuttingDown } ? .shutdown : .clientGone
    }

    /// Reserves a slot for one batch of `client` (`nil`: clients are not kept apart), or explains
    /// why there is none.
    func acquireBatchSlot(client: String? = nil) -> Problem? {
        let refusal = state.withLockedValue { state -> (Problem, String)? in
            if state.draining { return (.shuttingDown(retryAfterSeconds: configuration.retryAfterSeconds), "draining") }
            guard state.batchesInFlight < configuration.maximumBatchesInFlight else {
                return (.overloaded(retryAfterSeconds: configuration.retryAfterSeconds), "overloaded")
            }
            if let client {
                let mine = state.clientBatches[client, default: 0]
                guard mine < configuration.maximumBatchesInFlightPerClient else {
                    return (
                        .clientOverloaded(
                            limit: configuration.maximumBatchesInFlightPerClient,
                            retryAfterSeconds: configuration.retryAfterSeconds), "client_limit"
                    )
                }
                state.clientBatches[client] = mine + 1
            }
            state.batchesInFlight += 1
            return nil
        }
        guard let (problem, reason) = refusal else { return nil }
        metrics.batchShed(reason)
        return problem
    }

    func releaseBatchSlot(client: String? = nil) {
        state.withLockedValue { state in
            state.batchesInFlight -= 1
            if let client {
                let mine = state.clientBatches[client, default: 1] - 1
                state.clientBatches[client] = mine > 0 ? mine : nil
            }
        }
    }

    /// The client a request comes from, as nginx established it: `nil` when clients are not kept
    /// apart.
    ///
    /// - Throws: 401 when they are and the request carries no identity.
    func client(of request: FastCGIRequest) throws(Problem) -> String? {
        guard let parameter = configuration.clientIdentityParameter else { return nil }
        guard let client = request.parameters[parameter], !client.isEmpty, client.utf8.count <= 256,
            !client.utf8.contains(UInt8(ascii: "\n"))
        else { throw .unauthenticated() }
        return client
    }

    // MARK: Routing

    /// What routing makes of a request: its response at once, or work that waits for it.
    enum Routed {
        case response(FastCGIResponse)
        case later(@Sendable () async throws -> FastCGIResponse)
    }

    /// What a request's log line and metrics say of it, read from the request once.
    private struct RequestLine: Sendable {
        let id: String
        let path: String
        let method: String
        let receivedAt: ContinuousClock.Instant
        var taskCount = 0
    }

    /// Answers one request, logs it and counts it: at once when nothing it needs waits (a batch
    /// of instant operations, `/ops`, `/healthz`, every refusal), else from a task.
    public func answer(_ request: FastCGIRequest) -> FastCGIAnswer {
        let (request, requestID) = Self.identified(request)
        var line = RequestLine(
            id: requestID, path: request.path, method: request.method, receivedAt: request.receivedAt)
        let routed: Routed
        do {
            routed = try route(request, path: line.path, method: line.method, taskCount: &line.taskCount)
        } catch {
            routed = .response(errorResponse(error))
        }
        switch routed {
        case .response(let response):
            return .response(completed(response, line))
        case .later(let work):
            return .task { [self, line] in
                let response: FastCGIResponse
                do {
                    response = try await work()
                } catch {
                    response = errorResponse(error)
                }
                return completed(response, line)
            }
        }
    }

    /// Answers one request, whether or not it waits: for tests and front ends other than the
    /// FastCGI transport.
    public func handle(_ request: FastCGIRequest) async -> FastCGIResponse {
        switch answer(request) {
        case .response(let response): response
        case .task(let work): await work()
        }
    }

    /// A problem's response; any other error is a bare 500, logged with its type.
    private func errorResponse(_ error: any Error) -> FastCGIResponse {
        if let problem = error as? Problem { return problem.response() }
        logger.error("unexpected error", metadata: ["error": "\(type(of: error))"])
        return Problem(
            status: 500, type: "internal", title: "Internal server error",
            detail: "the server could not complete the request"
        ).response()
    }

    /// The response with its request id; logged and counted now, or, for a stream, when it ends.
    private func completed(_ response: FastCGIResponse, _ line: RequestLine) -> FastCGIResponse {
        var response = response
        response.headers.append(("X-Request-Id", line.id))
        if let stream = response.stream {
            // A streamed request is logged and counted when its stream ends, with its whole duration.
            let status = response.status
            response.stream = { [self] writer in
                await stream(writer)
                finished(line, status: status, streamed: true)
            }
        } else {
            finished(line, status: response.status, streamed: false)
        }
        return response
    }

    private func finished(_ line: RequestLine, status: Int, streamed: Bool) {
        let elapsed = ContinuousClock.now - line.receivedAt
        metrics.requestAnswered(path: line.path, method: line.method, status: status, duration: elapsed)
        // Formatting the line is most of its cost: skipped when the level is off.
        guard logger.logLevel <= .info else { return }
        let record = RequestLogRecord(
            method: line.method, path: line.path, status: status, tasks: line.taskCount, duration: elapsed,
            requestID: line.id, streamed: streamed)
        if let requestLog = configuration.requestLog { return requestLog(record) }
        logger.info("request", metadata: record.metadata)
    }

    private func route(_ request: FastCGIRequest, path: String, method: String, taskCount: inout Int) throws -> Routed {
        switch path {
        case "/batch":
            guard method == "POST" else { throw Problem.methodNotAllowed(method, allowed: "POST") }
            return try runBatch(request, taskCount: &taskCount)
        case "/ops":
            guard method == "GET" || method == "HEAD" else {
                throw Problem.methodNotAllowed(method, allowed: "GET, HEAD")
            }
            return .response(
                FastCGIResponse(status: 200, headers: [("Content-Type", "application/json")], body: operationsListing))
        case "/healthz":
            guard method == "GET" || method == "HEAD" else {
                throw Problem.methodNotAllowed(method, allowed: "GET, HEAD")
            }
            return .response(health())
        case "/metrics":
            guard method == "GET" || method == "HEAD" else {
                throw Problem.methodNotAllowed(method, allowed: "GET, HEAD")
            }
            return .later { await self.metricsResponse() }
        default:
            if path.hasPrefix("/batch/") {
                let id = path.dropFirst("/batch/".count)
                guard Self.isJobId(id) else {
                    if id.isEmpty || id.contains("/") { throw Problem.notFound("no resource at \(path)") }
                    throw Problem.jobNotFound(String(id))
                }
                return .later { try await self.jobResource(String(id), request) }
            }
            if path.hasPrefix("/ops/") {
                let name = String(path.dropFirst("/ops/".count))
                guard !name.isEmpty, !name.contains("/") else {
                    throw Problem.notFound("no resource at \(path)")
                }
                guard method == "POST" else { throw Problem.methodNotAllowed(method, allowed: "POST") }
                taskCount = 1
                return .later { try await self.runOperation(named: name, request) }
            }
            throw Problem.notFound("no resource at \(path)")
        }
    }

    /// `GET /metrics`: the Prometheus text format, with the job counts read from the store now.
    private func metricsResponse() async -> FastCGIResponse {
        var jobCounts: (queued: Int, running: Int)?
        if let jobs {
            do {
                jobCounts = (try await jobs.store.queuedCount(), jobs.runningCount)
            } catch {
                logger.warning("could not count jobs for /metrics", metadata: ["error": "\(error)"])
            }
        }
        let body = metrics.render(batchesInFlight: batchesInFlight, jobs: jobCounts)
        return FastCGIResponse(
            status: 200,
            headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), ("Cache-Control", "no-store")],
            body: body)
    }

    private func health() -> FastCGIResponse {
        let draining = isDraining
        return FastCGIResponse(
            status: draining ? 503 : 200,
            headers: [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
                + (draining ? [("Retry-After", "\(configuration.retryAfterSeconds)")] : []),
            body: Array((draining ? #"{"status":"draining"}"# : #"{"status":"ok"}"#).utf8))
    }

    /// Checks what every JSON-bodied request needs: a body within the limit, sent as JSON.
    func checkJSONBody(_ request: FastCGIRequest) throws(Problem) {
        if request.bodyTooLarge { throw .bodyTooLarge(limit: configuration.maximumBodyBytes) }
        // No body needs no media type: POST /ops/{name} takes it as `null` (and POST /batch as
        // malformed).
        if request.body.isEmpty && request.contentType == nil { return }
        guard Self.isJSON(request.contentType) else { throw .unsupportedMediaType(request.contentType) }
    }

    /// `application/json`, with no charset or a UTF-8 one.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        // What nearly every client sends: no need to parse it.
        if contentType == "application/json" { return true }
        let parts = contentType.split(separator: ";").map { $0.trimmingSpaces().lowercased() }
        guard parts.first == "application/json" else { return false }
        for parameter in parts.dropFirst() where parameter.hasPrefix("charset=") {
            let charset = parameter.dropFirst("charset=".count).replacingQuotes()
            if charset != "utf-8" && charset != "utf8" { return false }
        }
        return true
    }

    static func milliseconds(_ duration: Duration) -> String {
        var writer = JSONWriter(reservingCapacity: 16)
        writer.milliseconds(duration)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    private static func encodeListing(_ registry: OperationRegistry) -> [UInt8] {
        var writer = JSONWriter()
        writer.raw(#"{"operations":["#)
        for (index, operation) in registry.all.enumerated() {
            if index > 0 { writer.raw(",") }
            writer.raw(#"{"name":"#)
            writer.string(operation.name)
            writer.raw(#","description":"#)
            writer.string(operation.summary)
            writer.raw(#","input_schema":"#)
            writer.json(operation.inputSchema)
            writer.raw("}")
        }
        writer.raw("]}")
        return writer.bytes
    }
}

extension StringProtocol {
    fileprivate func replacingQuotes() -> String {
        String(filter { $0 != "\"" })
    }
}
