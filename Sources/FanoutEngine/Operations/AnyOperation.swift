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

    private let prepareInput: @Sendable (RawJSON) throws(InputError) -> PreparedTask

    /// Wraps an operation.
    public init<Wrapped: Operation>(_ operation: Wrapped) {
        name = operation.name
        summary = operation.summary
        inputSchema = operation.inputSchema
        isInstant = operation.isInstant
        // One shared copy of the operation; each task's bound work refers to it.
        if let instant = operation as? any InstantOperation {
            prepareInput = Self.preparer(instant)
        } else {
            let shared = Shared(operation)
            prepareInput = { (json: RawJSON) throws(InputError) -> PreparedTask in
                PreparedTask(bound: Bound(shared, try shared.operation.decodeInput(json)))
            }
        }
    }

    private static func preparer<Wrapped: InstantOperation>(
        _ operation: Wrapped
    ) -> @Sendable (RawJSON) throws(InputError) -> PreparedTask {
        let shared = Shared(operation)
        return { (json: RawJSON) throws(InputError) -> PreparedTask in
            PreparedTask(bound: InstantBound(shared, try shared.operation.decodeInput(json)))
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

    /// Runs an ``InstantOperation`` synchronously; `nil` for any other operation.
    func runInstantly() -> Result<RawJSON, any Error>? {
        bound.runInstantly()
    }

    /// Starts the operation without a task, if it can be (see ``Operation/start(_:completion:)``).
    func start(completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void) -> OperationHandle? {
        bound.start(completion: completion)
    }
}

/// The type-erased face of the bound work. A class: copying a task's work is one retain, and the
/// operation itself is shared, not copied into every task.
private protocol BoundOperation: AnyObject, Sendable {
    func run() async throws -> RawJSON
    func runInstantly() -> Result<RawJSON, any Error>?
    func start(completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void) -> OperationHandle?
}

/// An operation, stored once per registration.
private final class Shared<Wrapped: Operation>: Sendable {
    let operation: Wrapped

    init(_ operation: Wrapped) {
        self.operation = operation
    }
}

private final class Bound<Wrapped: Operation>: BoundOperation {
    let shared: Shared<Wrapped>
    let input: Wrapped.Input

    init(_ shared: Shared<Wrapped>, _ input: Wrapped.Input) {
        self.shared = shared
        self.input = input
    }

    func run() async throws -> RawJSON {
        try shared.operation.encodeOutput(try await shared.operation.run(input))
    }

    func runInstantly() -> Result<RawJSON, any Error>? { nil }

    func start(completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void) -> OperationHandle? {
        let operation = shared.operation
        return operation.start(input) { result in
            completion(result.flatMap { output in Result { try operation.encodeOutput(output) } })
        }
    }
}

private final class InstantBound<Wrapped: InstantOperation>: BoundOperation {
    let shared: Shared<Wrapped>
    let input: Wrapped.Input

    init(_ shared: Shared<Wrapped>, _ input: Wrapped.Input) {
        self.shared = shared
        self.input = input
    }

    func run() async throws -> RawJSON {
        try shared.operation.encodeOutput(shared.operation.runInstantly(input))
    }

    func runInstantly() -> Result<RawJSON, any Error>? {
        Result { try shared.operation.encodeOutput(shared.operation.runInstantly(input)) }
    }

    func start(completion: @escaping @Sendable (Result<RawJSON, any Error>) -> Void) -> OperationHandle? { nil }
}
