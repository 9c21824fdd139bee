/// `echo`: the output is the input, byte for byte.
public struct EchoOperation: RawJSONOperation {
    public var name: String { "echo" }
    public var summary: String { "Returns its input unchanged." }
    public var inputSchema: RawJSON {
        RawJSON(trusted: Array(#"{"description":"any JSON value"}"#.utf8))
    }

    public var acceptsAnyInput: Bool { true }

    /// Creates the operation.
    public init() {}

    /// The bytes of the input: there is nothing to validate and nothing to decode.
    public func runInstantly(_ input: RawJSON) -> RawJSON { input }
}
