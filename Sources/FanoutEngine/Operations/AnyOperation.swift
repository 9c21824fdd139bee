/// A type-erased ``Operation``, as stored in the registry.
///
/// A class: the decoder passes the operation of every task around, and copying a reference is
/// one retain where copying the fields was five.
public final class AnyOperation: Sendable {
    /// The operation's name.
    public let name: String
    /// Its one-line description.
    public let summary: String
    /// The JSON Schema of its input.
    public let inputSchema: RawJSON
    /// Whether it runs inline (see ``Operation/isInstant``).
    public let isInstant: Bool
    /// Whether it runs without an asynchronous call: it is an ``InstantOperation``.
    public let isSynchronous: Bool
    /// The request headers it reads (see ``Operation/requestHeaderNames``).
    public let requestHeaderNames: Set<String>
    /// Input fields that must not be references (see ``Operation/fieldsWithoutReferences``).
    public let fieldsWithoutReferences: Set<String>

    /// The operation, when it is a ``RawJSONOperation``: a batch keeps its tasks' inputs where
    /// they lie in the request instead of preparing each.
    let rawJSONOperation: (any RawJSONOperation)?

    private let prepareInput: @Sendable (RawJSON, RequestContext) throws(InputError) -> PreparedTask

    /// Wraps an operation.
    public init<Wrapped: Operation>(_ operation: Wrapped) {
        name = operation.name
        summary = operation.summary
        inputSchema = operation.inputSchema
        isInstant = operation.isInstant
        requestHeaderNames = operation.requestHeaderNames
        fieldsWithoutReferences = operation.fieldsWithoutReferences
        // Each task's bound work holds its own copy of the operation: free for the built-ins,
        // whose structs hold no references. A shared box would be retained and released by
        // every task on every event loop, contending for one cache line.
        rawJSONOperation = operation as? any RawJSONOperation
        if let instant = operation as? any InstantOperation {
            isSynchronous = true
            prepareInput = Self.preparer(instant)
        } else {
            isSynchronous = false
            prepareInput = { (json: RawJSON, context: RequestContext) throws(InputError) -> PreparedTask in
                PreparedTask(.bound(Bound(operation, try operation.decodeInput(json, context: context))))
            }
        }
    }

    private static func preparer<Wrapped: InstantOperation>(
        _ operation: Wrapped
    ) -> @Sendable (RawJSON, RequestContext) throws(InputError) -> PreparedTask {
        if let raw = operation as? any RawJSONOperation {
            // Its input needs no box: the task keeps the operation (by value, an empty struct
            // for `echo`) beside it.
            return { (json: RawJSON, context: RequestContext) throws(InputError) -> PreparedTask in
                try raw.validateInput(json, context: context)
                return PreparedTask(.rawJSON(raw, json))
            }
        }
        return { (json: RawJSON, context: RequestContext) throws(InputError) -> PreparedTask in
            PreparedTask(.bound(InstantBound(operation, try operation.decodeInput(json, context: context))))
        }
    }

    /// Decodes and validates `input`, returning the work ready to run.
    ///
    /// - Parameter context: the request that carried the batch.
    /// - Throws: ``InputError`` when the input is not acceptable.
    public func prepare(_ input: RawJSON, context: RequestContext = .none) throws(InputError) -> PreparedTask {
        try prepareInput(input, context)
    }
}

/// An operation bound to its validated input, ready to run.
public struct PreparedTask: Sendable {
    fileprivate enum Work: Sendable {
        /// The operation and its decoded input, in a box.
        case bound(any BoundOperation)
        /// A ``RawJSONOperation`` beside its input: a batch of ten thousand such tasks makes no
        /// allocation for them.
        case rawJSON(any RawJSONOperation, RawJSON)
    }

    private let work: Work

    fileprivate init(_ work: Work) {
        self.work = work
    }

    /// `operation` with `input`, already validated.
    static func rawJSON(_ operation: any RawJSONOperation, input: RawJSON) -> PreparedTask {
        PreparedTask(.rawJSON(operation, input))
    }

    /// Runs the operation and returns its encoded output.
    public func run() async throws -> RawJSON {
        switch work {
        case .bound(let bound): try await bound.run()
        case .rawJSON(let operation, let input): try operation.encodeOutput(operation.runInstantly(input))
        }
    }

    /// Whether ``runInstantly()`` runs it (its operation is an ``InstantOperation``).
    var isSynchronous: Bool {
        switch work {
        case .bound(let bound): bound.isSynchronous
        case .rawJSON: true
        }
    }

    /// Runs an ``InstantOperation`` synchronously; `nil` for any other operation.
    func runInstantly() -> Result<RawJSON, any Error>? {
        switch work {
        case .bound(let bound): bound.runInstantly()
        case .rawJSON(let operation, let input): Result { try operation.encodeOutput(operation.runInstantly(input)) }
        }
    }

    /// Starts the operation without a task, if it can be (see ``Operation/start(_:deadline:completion:)``).
    func start(
        deadline: ContinuousClock.Instant, completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void
    ) -> OperationHandle? {
        switch work {
        case .bound(let bound): bound.start(deadline: deadline, completion: completion)
        case .rawJSON: nil
        }
    }
}

/// The type-erased face of the bound work. A class: copying a task's work is one retain.
private protocol BoundOperation: AnyObject, Sendable {
    var isSynchronous: Bool { get }
    func run() async throws -> RawJSON
    func runInstantly() -> Result<RawJSON, any Error>?
    func start(
        deadline: ContinuousClock.Instant, completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void
    ) -> OperationHandle?
}

private final class Bound<Wrapped: Operation>: BoundOperation {
    let operation: Wrapped
    let input: Wrapped.Input

    init(_ operation: Wrapped, _ input: Wrapped.Input) {
        self.operation = operation
        self.input = input
    }

    func run() async throws -> RawJSON {
        try operation.encodeOutput(try await operation.run(input))
    }

    var isSynchronous: Bool { false }

    func runInstantly() -> Result<RawJSON, any Error>? { nil }

    func start(
        deadline: ContinuousClock.Instant, completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void
    ) -> OperationHandle? {
        let operation = operation
        return operation.start(input, deadline: deadline) { result in
            completion(result.flatMap { output in Result { try operation.encodeOutput(output) } })
        }
    }
}

private final class InstantBound<Wrapped: InstantOperation>: BoundOperation {
    let operation: Wrapped
    let input: Wrapped.Input

    init(_ operation: Wrapped, _ input: Wrapped.Input) {
        self.operation = operation
        self.input = input
    }

    var isSynchronous: Bool { true }

    func run() async throws -> RawJSON {
        try operation.encodeOutput(operation.runInstantly(input))
    }

    func runInstantly() -> Result<RawJSON, any Error>? {
        Result { try operation.encodeOutput(operation.runInstantly(input)) }
    }

    func start(
        deadline: ContinuousClock.Instant, completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void
    ) -> OperationHandle? { nil }
}
