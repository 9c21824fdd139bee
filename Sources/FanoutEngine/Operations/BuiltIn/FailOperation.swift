/// `fail`: always fails with the code and message it is given, to exercise clients' error paths.
public struct FailOperation: InstantOperation {
    public struct Input: Decodable, Sendable {
        public var code: String
        public var message: String?

        private enum CodingKeys: String, CodingKey { case code, message }

        public init(from decoder: any Decoder) throws {
            let members = try decoder.container(keyedBy: CodingKeys.self)
            code = try members.decode(String.self, forKey: .code)
            message = try members.decodeUnlessAbsent(String.self, forKey: .message)
        }
    }

    public var name: String { "fail" }
    public var summary: String { "Always fails with the given error code and message." }
    public var inputSchema: RawJSON {
        RawJSON(
            trusted: Array(
                #"{"type":"object","required":["code"],"properties":{"code":{"type":"string","minLength":1,"maxLength":64},"message":{"type":"string"}}}"#
                    .utf8))
    }

    /// Creates the operation.
    public init() {}

    public func decodeInput(_ json: RawJSON) throws(InputError) -> Input {
        let input = try json.decodeInput(Input.self)
        // Unicode scalars, as JSON Schema's maxLength counts (not grapheme clusters).
        guard (1...64).contains(input.code.unicodeScalars.count) else {
            throw InputError(path: "code", "must be 1 to 64 characters")
        }
        return input
    }

    public func runInstantly(_ input: Input) throws -> Never {
        throw OperationError(code: input.code, message: input.message ?? "failed as requested")
    }

    public func encodeOutput(_ output: Never) throws -> RawJSON {}
}
