/// A type-erased ``Operation``, as stored in the registry.
public struct AnyOperation: Sendable {
    /// The operation's name.
    public let name: String
    /// Its one-line description.
    public let summary: String
    /// The JSON Schema of its input.
    public let inputSchema: RawJSON
    /// Whether it runs inline (see ``Operation/isInstant``).
    public let isInstant: Bool

    private let prepareInput: @Sendable (RawJSON) throws(InputError) -> PreparedTask

    /// Wraps an operation.
    public init<Wrapped: Operation>(_ operation: Wrapped) {
        name = operation.name
        summary = operation.summary
        inputSchema = operation.inputSchema
        isInstant = operation.isInstant
        prepareInput = { (json: RawJSON) throws(InputError) -> PreparedTask in
            PreparedTask(bound: Bound(operation: operation, input: try operation.decodeInput(json)))
        }
    }

    /// Decodes and validates `input`, returning the work ready to run.
    ///
    /// - Throws: ``InputError`` when the input is not acceptable.
    public func prepare(_ input: RawJSON) throws(InputError) -> PreparedTask {
        try prepareInput(input)
    }
}

/// An operation bound to its validated input, ready to run.
public struct PreparedTask: Sendable {
    fileprivate let bound: any BoundOperation

    /// Runs the operation and returns its encoded output.
    public func run() async throws -> RawJSON {
        try await bound.run()
    }

    /// Starts the operation without a task, if it can be (see ``Operation/start(_:completion:)``).
    func start(completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void) -> OperationHandle? {
        bound.start(completion: completion)
    }
}

/// The type-erased face of ``Bound``: one existential instead of a closure per entry point.
private protocol BoundOperation: Sendable {
    func run() async throws -> RawJSON
    func start(completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void) -> OperationHandle?
}

private struct Bound<Wrapped: Operation>: BoundOperation {
    let operation: Wrapped
    let input: Wrapped.Input

    func run() async throws -> RawJSON {
        try operation.encodeOutput(try await operation.run(input))
    }

    func start(completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void) -> OperationHandle? {
        let operation = operation
        return operation.start(input) { result in
            completion(result.flatMap { output in Result { try operation.encodeOutput(output) } })
        }
    }
}
