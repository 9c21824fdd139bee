import FanoutEngine
import Synchronization
import Testing

/// Records when tasks of the `probe` operation run, to check ordering and concurrency.
final class ProbeRecorder: Sendable {
    struct Event: Sendable {
        var id: String
        var start: ContinuousClock.Instant
        var end: ContinuousClock.Instant
    }

    private struct State {
        var running = 0
        var maximumRunning = 0
        var events: [Event] = []
    }

    private let state = Mutex(State())

    var maximumRunning: Int { state.withLock { $0.maximumRunning } }
    var events: [Event] { state.withLock { $0.events } }

    func event(_ id: String) -> Event? { events.first { $0.id == id } }

    func begin() {
        state.withLock {
            $0.running += 1
            $0.maximumRunning = max($0.maximumRunning, $0.running)
        }
    }

    func end(_ event: Event) {
        state.withLock {
            $0.running -= 1
            $0.events.append(event)
        }
    }
}

/// `probe`: input `{"id": "...", "ms": N}`; sleeps N ms and records when it ran.
struct ProbeOperation: Operation {
    struct Input: Decodable, Sendable {
        var id: String
        var ms: Int
    }

    struct Output: Encodable, Sendable {
        var id: String
    }

    let recorder: ProbeRecorder
    let name = "probe"
    let summary = "Test operation."
    let inputSchema: RawJSON = #"{"type":"object"}"#

    func run(_ input: Input) async throws -> Output {
        recorder.begin()
        let start = ContinuousClock.now
        defer { recorder.end(.init(id: input.id, start: start, end: .now)) }
        try await Task.sleep(for: .milliseconds(input.ms))
        return Output(id: input.id)
    }
}

func makeDecoder(
    recorder: ProbeRecorder = ProbeRecorder(), limits: EngineLimits = EngineLimits(),
    splitBytes: Int = BatchDecoder.defaultSplitBytes
) -> BatchDecoder {
    var registry = OperationRegistry.builtIns(limits: limits)
    registry.register(ProbeOperation(recorder: recorder))
    registry.register(QuitOperation())
    registry.register(StubbornOperation())
    registry.register(WrapOperation())
    registry.register(SpinOperation())
    return BatchDecoder(registry: registry, limits: limits, splitBytes: splitBytes)
}

func decode(_ json: String, recorder: ProbeRecorder = ProbeRecorder(), limits: EngineLimits = EngineLimits())
    throws -> Batch
{
    try makeDecoder(recorder: recorder, limits: limits).decode(Array(json.utf8))
}

func run(_ json: String, recorder: ProbeRecorder = ProbeRecorder(), limits: EngineLimits = EngineLimits()) async throws
    -> BatchResult
{
    await BatchRunner.run(try decode(json, recorder: recorder, limits: limits))
}

extension BatchResult {
    subscript(id: String) -> TaskResult? { results.first { $0.id == id } }

    var text: String { String(decoding: jsonBytes(), as: UTF8.self) }
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

/// `wrap`: a second raw-JSON operation beside `echo`, answering `{"wrapped": true}`.
struct WrapOperation: RawJSONOperation {
    let name = "wrap"
    let summary = "Test operation."
    let inputSchema: RawJSON = "{}"

    func runInstantly(_ input: RawJSON) -> RawJSON { #"{"wrapped":true}"# }
}

/// `spin`: a raw-JSON operation that keeps its thread busy for the input's number of
/// microseconds (0 to 100,000), then answers its input.
struct SpinOperation: RawJSONOperation {
    let name = "spin"
    let summary = "Test operation."
    let inputSchema: RawJSON = "{}"

    func validateInput(_ json: RawJSON, context: RequestContext) throws(InputError) {
        guard let microseconds = Int(json.description), (0...100_000).contains(microseconds) else {
            throw InputError("must be a number of microseconds, 0 to 100000")
        }
    }

    func runInstantly(_ input: RawJSON) -> RawJSON {
        let microseconds = Int(input.description) ?? 0
        let clock = ContinuousClock()
        let end = clock.now + .microseconds(microseconds)
        while clock.now < end {}
        return input
    }
}

/// `quit`: throws `CancellationError` by itself, though nobody cancelled it.
struct QuitOperation: Operation {
    let name = "quit"
    let summary = "Test operation."
    let inputSchema: RawJSON = "{}"

    func decodeInput(_ json: RawJSON) throws(InputError) {}

    func run(_ input: Void) async throws -> Int { throw CancellationError() }

    func encodeOutput(_ output: Int) throws -> RawJSON { .null }
}

/// `stubborn`: started without a task, it ignores cancellation and reports `{"ms": N}` after N ms
/// anyway, or at once (before `start` returns) when N is 0: the engine must cope with both.
struct StubbornOperation: Operation {
    struct Input: Decodable, Sendable {
        var ms: Int
    }

    let name = "stubborn"
    let summary = "Test operation."
    let inputSchema: RawJSON = #"{"type":"object"}"#

    func run(_ input: Input) async throws -> Int {
        Issue.record("the engine ran a startable operation in a task")
        return input.ms
    }

    /// How many reports all `stubborn` tasks have made, counted after each one is made.
    static let reports = Mutex(0)

    func start(_ input: Input, completion: @escaping @Sendable (Result<Int, any Error>) -> Void) -> OperationHandle? {
        if input.ms == 0 {
            completion(.success(0))
            Self.reports.withLock { $0 += 1 }
        } else {
            _ = DeadlineScheduler.shared.schedule(at: .now + .milliseconds(input.ms)) {
                completion(.success(input.ms))
                Self.reports.withLock { $0 += 1 }
            }
        }
        return OperationHandle {}
    }

    func encodeOutput(_ output: Int) throws -> RawJSON { try RawJSON(encoding: ["ms": output]) }
}

/// The issues `decode` reports for `body`; records a test issue if it accepts the body.
func issues(for body: String, limits: EngineLimits = EngineLimits()) -> [ValidationIssue] {
    do {
        _ = try decode(body, limits: limits)
        Issue.record("accepted an invalid batch: \(body)")
    } catch let error as BatchValidationError {
        return error.issues
    } catch {
        Issue.record("unexpected error \(error)")
    }
    return []
}
