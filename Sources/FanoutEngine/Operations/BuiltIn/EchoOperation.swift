/// `echo`: the output is the input, byte for byte.
public struct EchoOperation: InstantOperation {
    public var name: String { "echo" }
    public var summary: String { "Returns its input unchanged." }
    public var inputSchema: RawJSON {
        RawJSON(trusted: Array(#"{"description":"any JSON value"}"#.utf8))
    }

    /// Creates the operation.
    public init() {}

    /// Keeps the raw bytes: there is nothing to validate and nothing to decode.
    public func decodeInput(_ json: RawJSON) throws(InputError) -> RawJSON { json }

    public func runInstantly(_ input: RawJSON) -> RawJSON { input }

    public func encodeOutput(_ output: RawJSON) throws -> RawJSON { output }
}
