/// `fail`: always fails with the code and message it is given, to exercise clients' error paths.
public struct FailOperation: Operation {
    public struct Input: Decodable, Sendable {
        public var code: String
        public var message: String?
    }

    public let name = "fail"
    public let summary = "Always fails with the given error code and message."
    public let inputSchema = RawJSON(
        trusted: Array(
            #"{"type":"object","required":["code"],"properties":{"code":{"type":"string","minLength":1,"maxLength":64},"message":{"type":"string"}}}"#
                .utf8))
    public let isInstant = true

    /// Creates the operation.
    public init() {}

    public func decodeInput(_ json: RawJSON) throws(InputError) -> Input {
        let input = try json.decodeInput(Input.self)
        guard (1...64).contains(input.code.count) else {
            throw InputError(path: "code", "must be 1 to 64 characters")
        }
        return input
    }

    public func run(_ input: Input) async throws -> Never {
        throw OperationError(code: input.code, message: input.message ?? "failed as requested")
    }

    public func encodeOutput(_ output: Never) throws -> RawJSON {}
}
