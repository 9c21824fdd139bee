/// `sleep`: waits `ms` milliseconds without holding a thread, stopping early when cancelled.
public struct SleepOperation: Operation {
    public struct Input: Sendable {
        public var ms: Int
    }

    public var name: String { "sleep" }
    public var summary: String { "Waits the given number of milliseconds, then returns." }
    public var inputSchema: RawJSON {
        RawJSON(
            trusted: Array(
                #"{"type":"object","required":["ms"],"properties":{"ms":{"type":"integer","minimum":0,"maximum":\#(maximumMilliseconds)}}}"#
                    .utf8))
    }
    /// The longest sleep accepted.
    public let maximumMilliseconds: Int

    /// Creates the operation with its longest accepted sleep.
    public init(maximumMilliseconds: Int) {
        self.maximumMilliseconds = maximumMilliseconds
    }

    // Hand-written decoding and encoding: sleep is the typical short task, and JSONDecoder and
    // JSONEncoder cost more than the rest of its bookkeeping together.
    public func decodeInput(_ json: RawJSON) throws(InputError) -> Input {
        guard let members = json.objectMembers() else { throw InputError("must be an object") }
        guard let ms = members["ms"] else { throw InputError(path: "ms", "is required") }
        guard let milliseconds = ms.integerValue else { throw InputError(path: "ms", "must be an integer") }
        guard (0...maximumMilliseconds).contains(milliseconds) else {
            throw InputError(path: "ms", "must be between 0 and \(maximumMilliseconds)")
        }
        return Input(ms: milliseconds)
    }

    public func run(_ input: Input) async throws -> Int {
        try await DeadlineScheduler.shared.sleep(for: .milliseconds(input.ms))
        return input.ms
    }

    // A timer instead of a suspended task: the engine then runs a batch of sleeps without
    // creating and resuming a task per sleep, which cost more than the rest of the batch.
    public func start(
        _ input: Input, completion: @escaping @Sendable (Result<Int, any Error>) -> Void
    ) -> OperationHandle? {
        let milliseconds = input.ms
        let timer = DeadlineScheduler.shared.schedule(at: .now + .milliseconds(milliseconds)) {
            completion(.success(milliseconds))
        }
        return OperationHandle { DeadlineScheduler.shared.cancel(timer) }
    }

    public func encodeOutput(_ sleptMilliseconds: Int) throws -> RawJSON {
        RawJSON(trusted: Array(#"{"slept_ms":\#(sleptMilliseconds)}"#.utf8))
    }
}
