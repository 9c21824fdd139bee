/// The operations a server offers, by name.
public struct OperationRegistry: Sendable {
    private var operations: [String: AnyOperation] = [:]

    /// An empty registry.
    public init() {}

    /// The built-in operations (`echo`, `sleep`, `hash`, `fail`), configured by `limits`.
    public static func builtIns(limits: EngineLimits) -> OperationRegistry {
        var registry = OperationRegistry()
        registry.register(EchoOperation())
        registry.register(SleepOperation(maximumMilliseconds: limits.maximumTaskTimeoutMilliseconds))
        registry.register(HashOperation())
        registry.register(FailOperation())
        return registry
    }

    /// Adds `operation`, replacing any operation of the same name.
    public mutating func register(_ operation: some Operation) {
        operations[operation.name] = AnyOperation(operation)
    }

    /// The operation called `name`, if any.
    public subscript(name: String) -> AnyOperation? {
        operations[name]
    }

    /// All operations, sorted by name.
    public var all: [AnyOperation] {
        operations.values.sorted { $0.name < $1.name }
    }
}
