/// `sleep`: waits `ms` milliseconds without holding a thread, stopping early when cancelled.
public struct SleepOperation: Operation {
    public struct Input: Decodable, Sendable {
        public var ms: Int
    }

    public struct Output: Encodable, Sendable {
        public var sleptMilliseconds: Int

        enum CodingKeys: String, CodingKey {
            case sleptMilliseconds = "slept_ms"
        }
    }

    public let name = "sleep"
    public let summary = "Waits the given number of milliseconds, then returns."
    public let inputSchema: RawJSON
    /// The longest sleep accepted.
    public let maximumMilliseconds: Int

    /// Creates the operation with its longest accepted sleep.
    public init(maximumMilliseconds: Int) {
        self.maximumMilliseconds = maximumMilliseconds
        inputSchema = RawJSON(
            trusted: Array(
                #"{"type":"object","required":["ms"],"properties":{"ms":{"type":"integer","minimum":0,"maximum":\#(maximumMilliseconds)}}}"#
                    .utf8))
    }

    public func decodeInput(_ json: RawJSON) throws(InputError) -> Input {
        let input = try json.decodeInput(Input.self)
        guard (0...maximumMilliseconds).contains(input.ms) else {
            throw InputError(path: "ms", "must be between 0 and \(maximumMilliseconds)")
        }
        return input
    }

    public func run(_ input: Input) async throws -> Output {
        try await Task.sleep(for: .milliseconds(input.ms))
        return Output(sleptMilliseconds: input.ms)
    }
}
