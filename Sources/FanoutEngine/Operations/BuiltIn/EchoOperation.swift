/// `echo`: the output is the input, byte for byte.
public struct EchoOperation: Operation {
    public let name = "echo"
    public let summary = "Returns its input unchanged."
    public let inputSchema = RawJSON(trusted: Array(#"{"description":"any JSON value"}"#.utf8))
    public let isInstant = true

    /// Creates the operation.
    public init() {}

    /// Keeps the raw bytes: there is nothing to validate and nothing to decode.
    public func decodeInput(_ json: RawJSON) throws(InputError) -> RawJSON { json }

    public func run(_ input: RawJSON) async throws -> RawJSON { input }

    public func encodeOutput(_ output: RawJSON) throws -> RawJSON { output }
}
