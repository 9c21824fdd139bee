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
                PreparedTask(bound: Bound(operation, try operation.decodeInput(json, context: context)))
            }
        }
    }

    private static func preparer<Wrapped: InstantOperation>(
        _ operation: Wrapped
    ) -> @Sendable (RawJSON, RequestContext) throws(InputError) -> PreparedTask {
        if let raw = operation as? any RawJSONOperation {
            // Its input is checked, not decoded (a batch keeps such tasks' inputs in its body;
            // this is for the rest, such as `POST /ops/echo`).
            return { (json: RawJSON, context: RequestContext) throws(InputError) -> PreparedTask in
                try raw.validateInput(json, context: context)
                return .rawJSON(raw, input: json)
            }
        }
        return { (json: RawJSON, context: RequestContext) throws(InputError) -> PreparedTask in
            PreparedTask(bound: InstantBound(operation, try operation.decodeInput(json, context: context)))
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
    fileprivate let bound: any BoundOperation

    fileprivate init(bound: any BoundOperation) {
        self.bound = bound
    }

    /// `operation` with `input`, already validated.
    static func rawJSON(_ operation: any RawJSONOperation, input: RawJSON) -> PreparedTask {
        PreparedTask(bound: RawJSONBound(operation, input))
    }

    /// Runs the operation and returns its encoded output.
    public func run() async throws -> RawJSON {
        try await bound.run()
    }

    /// Whether ``runInstantly()`` runs it (its operation is an ``InstantOperation``).
    var isSynchronous: Bool { bound.isSynchronous }

    /// Runs an ``InstantOperation`` synchronously; `nil` for any other operation.
    func runInstantly() -> Result<RawJSON, any Error>? {
        bound.runInstantly()
    }

    /// Starts the operation without a task, if it can be (see ``Operation/start(_:deadline:completion:)``).
    func start(
        deadline: ContinuousClock.Instant, completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void
    ) -> OperationHandle? {
        bound.start(deadline: deadline, completion: completion)
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

/// A ``RawJSONOperation`` with its input.
private final class RawJSONBound: BoundOperation {
    let operation: any RawJSONOperation
    let input: RawJSON

    init(_ operation: any RawJSONOperation, _ input: RawJSON) {
        self.operation = operation
        self.input = input
    }

    var isSynchronous: Bool { true }

    func run() async throws -> RawJSON {
        try operation.runInstantly(input)
    }

    func runInstantly() -> Result<RawJSON, any Error>? {
        Result { try operation.runInstantly(input) }
    }

    func start(
        deadline: ContinuousClock.Instant, completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void
    ) -> OperationHandle? { nil }
}
