/// One kind of work a batch task can name in its `op` field.
///
/// An operation decodes and validates its typed input before any task of the batch starts, so a
/// batch with one bad input is rejected whole; `run` then only sees valid input. To add an
/// operation, write one type conforming to this protocol and register it with
/// ``OperationRegistry/register(_:)``.
///
/// ```swift
/// struct Uppercase: Operation {
///     struct Input: Decodable, Sendable { var text: String }
///     struct Output: Encodable, Sendable { var text: String }
///     let name = "uppercase"
///     let summary = "Returns the text in upper case."
///     let inputSchema: RawJSON = #"{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}}"#
///     func run(_ input: Input) async throws -> Output { Output(text: input.text.uppercased()) }
/// }
/// ```
public protocol Operation: Sendable {
    /// The validated input `run` receives.
    associatedtype Input: Sendable
    /// The value `run` produces, written as the task's `output`.
    associatedtype Output: Sendable

    /// The name tasks use in `op`.
    var name: String { get }
    /// A one-line description, listed by `GET /ops`.
    var summary: String { get }
    /// A JSON Schema of the input, listed by `GET /ops`.
    var inputSchema: RawJSON { get }
    /// Whether `run` finishes in microseconds without suspending.
    ///
    /// The engine runs such operations inline instead of in a child task of their own, because
    /// creating a task would cost more than the work itself; they get no timeout timer either.
    /// Leave it `false` (the default) for anything that waits or may run long. Conforming to
    /// ``InstantOperation`` sets it, and spares the engine even the asynchronous call.
    var isInstant: Bool { get }

    /// Turns the task's raw `input` into `Input`, rejecting anything invalid.
    ///
    /// - Throws: ``InputError`` naming the offending field.
    func decodeInput(_ json: RawJSON) throws(InputError) -> Input

    /// Like ``decodeInput(_:)``, for an operation that needs to know about the request that
    /// carried the batch (headers it forwards, its request id). The default ignores `context`.
    ///
    /// - Throws: ``InputError`` naming the offending field.
    func decodeInput(_ json: RawJSON, context: RequestContext) throws(InputError) -> Input

    /// The request headers (lower-case names) this operation reads from ``RequestContext``;
    /// none by default.
    var requestHeaderNames: Set<String> { get }

    /// Top-level input fields that must not be references (`{"$ref": …}`): they are checked
    /// before anything runs, and an output of another task must not change them (for `http`:
    /// which upstream and which path are called). None by default.
    var fieldsWithoutReferences: Set<String> { get }

    /// Does the work. Long-running operations must honour task cancellation (timeouts, batch
    /// deadlines and vanished clients are delivered that way).
    ///
    /// - Throws: ``OperationError`` for a failure with a stable code; anything else is reported to
    ///   the client as `operation_failed` without its details.
    func run(_ input: Input) async throws -> Output

    /// Starts the work without a task of its own, reporting its end through `completion`; or
    /// returns `nil` (the default) to have the engine call ``run(_:)`` in a child task.
    ///
    /// Creating and resuming a child task costs microseconds, more than an operation that only
    /// waits for a timer or a callback-based client does itself; with hundreds of such tasks per
    /// batch that cost dominates. The engine ignores `completion` once it has cancelled the
    /// returned handle (on timeout, deadline or a vanished client), so calling it late is safe;
    /// calling it more than once is not allowed. `completion` may be called on any thread, even
    /// before `start` returns, and should be quick.
    func start(
        _ input: Input, completion: @escaping @Sendable (Result<Output, any Error>) -> Void
    ) -> OperationHandle?

    /// Like ``start(_:completion:)``, for an operation that needs its task's deadline (the
    /// earlier of its timeout and its batch's deadline), to give up at once on work that could
    /// not finish in time. The default ignores `deadline`.
    func start(
        _ input: Input, deadline: ContinuousClock.Instant,
        completion: @escaping @Sendable (Result<Output, any Error>) -> Void
    ) -> OperationHandle?

    /// Turns `run`'s result into the task's `output`.
    func encodeOutput(_ output: Output) throws -> RawJSON
}

extension Operation {
    public var isInstant: Bool { false }

    public func decodeInput(_ json: RawJSON, context: RequestContext) throws(InputError) -> Input {
        try decodeInput(json)
    }

    public var requestHeaderNames: Set<String> { [] }

    public var fieldsWithoutReferences: Set<String> { [] }

    public func start(
        _ input: Input, completion: @escaping @Sendable (Result<Output, any Error>) -> Void
    ) -> OperationHandle? {
        nil
    }

    public func start(
        _ input: Input, deadline: ContinuousClock.Instant,
        completion: @escaping @Sendable (Result<Output, any Error>) -> Void
    ) -> OperationHandle? {
        start(input, completion: completion)
    }
}

/// An operation whose work takes microseconds and never waits: hashing a string, reshaping JSON.
///
/// The engine calls ``runInstantly(_:)`` inline, synchronously, between other tasks: no child
/// task, no asynchronous call, no timeout timer. For a batch of ten thousand such tasks, the
/// cost of an asynchronous call each is a fifth of the whole run.
public protocol InstantOperation: Operation {
    /// Does the work at once.
    ///
    /// - Throws: as ``Operation/run(_:)``.
    func runInstantly(_ input: Input) throws -> Output
}

extension InstantOperation {
    public var isInstant: Bool { true }

    public func run(_ input: Input) async throws -> Output {
        try runInstantly(input)
    }
}

/// An instant operation that takes and returns JSON as it is, as `echo` does.
///
/// Its input reaches ``InstantOperation/runInstantly(_:)`` exactly as the client wrote it:
/// the engine keeps only where it lies in the request, and checks it with
/// ``validateInput(_:context:)``. Its output is written as returned. (``Operation/decodeInput(_:)``
/// and ``Operation/encodeOutput(_:)`` are not called.) A batch of ten thousand such tasks
/// allocates nothing for them.
public protocol RawJSONOperation: InstantOperation where Input == RawJSON, Output == RawJSON {
    /// Checks the input before anything runs. The default accepts any JSON value.
    ///
    /// - Throws: ``InputError`` naming what is wrong.
    func validateInput(_ json: RawJSON, context: RequestContext) throws(InputError)

    /// True when ``validateInput(_:context:)`` accepts every JSON value, so that the engine need
    /// not call it; the default is false. (A batch of echoes spent a tenth of its decoding
    /// making each input a value to pass to a check that does nothing.)
    var acceptsAnyInput: Bool { get }
}

extension RawJSONOperation {
    public func validateInput(_ json: RawJSON, context: RequestContext) throws(InputError) {}

    public var acceptsAnyInput: Bool { false }

    /// The input as it is, once ``validateInput(_:context:)`` accepts it.
    public func decodeInput(_ json: RawJSON) throws(InputError) -> RawJSON {
        try validateInput(json, context: .none)
        return json
    }

    /// The output as it is.
    public func encodeOutput(_ output: RawJSON) throws -> RawJSON { output }
}

/// Work begun by ``Operation/start(_:completion:)``, which the engine may cancel.
public struct OperationHandle: Sendable {
    let cancel: @Sendable () -> Void

    /// Creates a handle; `cancel` stops the work (it is called at most once, on any thread).
    public init(cancel: @escaping @Sendable () -> Void) {
        self.cancel = cancel
    }
}

extension Operation where Input: Decodable {
    /// Decodes the input with `JSONDecoder`, translating decoding errors into ``InputError``.
    public func decodeInput(_ json: RawJSON) throws(InputError) -> Input {
        try json.decodeInput(Input.self)
    }
}

extension Operation where Output: Encodable {
    /// Encodes the output with `JSONEncoder`.
    public func encodeOutput(_ output: Output) throws -> RawJSON {
        try RawJSON(encoding: output)
    }
}
