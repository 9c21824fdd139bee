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
            let input = try operation.decodeInput(json)
            return PreparedTask { try operation.encodeOutput(try await operation.run(input)) }
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
    /// Runs the operation and returns its encoded output.
    public let run: @Sendable () async throws -> RawJSON
}
