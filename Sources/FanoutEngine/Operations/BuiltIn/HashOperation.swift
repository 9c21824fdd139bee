import Crypto

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `hash`: the SHA-2 digest of a UTF-8 or base64 string, as lowercase hex.
public struct HashOperation: InstantOperation {
    /// The decoded input: the algorithm and the bytes to hash.
    public struct Input: Sendable {
        public var algorithm: Algorithm
        public var data: [UInt8]
    }

    /// Supported digests.
    public enum Algorithm: String, Sendable, Decodable {
        case sha256, sha384, sha512
    }

    public struct Output: Encodable, Sendable {
        public var digest: String
    }

    private struct WireInput: Decodable {
        var algorithm: String
        var data: String
        var encoding: String?

        private enum CodingKeys: String, CodingKey { case algorithm, data, encoding }

        init(from decoder: any Decoder) throws {
            let members = try decoder.container(keyedBy: CodingKeys.self)
            algorithm = try members.decode(String.self, forKey: .algorithm)
            data = try members.decode(String.self, forKey: .data)
            encoding = try members.decodeUnlessAbsent(String.self, forKey: .encoding)
        }
    }

    public var name: String { "hash" }
    public var summary: String { "Returns the SHA-256, SHA-384 or SHA-512 digest of the data as lowercase hex." }
    public var inputSchema: RawJSON {
        RawJSON(
            trusted: Array(
                #"{"type":"object","required":["algorithm","data"],"properties":{"algorithm":{"enum":["sha256","sha384","sha512"]},"data":{"type":"string"},"encoding":{"enum":["utf8","base64"],"default":"utf8"}}}"#
                    .utf8))
    }

    /// Creates the operation.
    public init() {}

    public func decodeInput(_ json: RawJSON) throws(InputError) -> Input {
        let wire = try json.decodeInput(WireInput.self)
        guard let algorithm = Algorithm(rawValue: wire.algorithm) else {
            throw InputError(path: "algorithm", "must be one of sha256, sha384, sha512")
        }
        switch wire.encoding ?? "utf8" {
        case "utf8":
            return Input(algorithm: algorithm, data: Array(wire.data.utf8))
        case "base64":
            guard let data = Data(base64Encoded: wire.data) else {
                throw InputError(path: "data", "is not valid base64")
            }
            return Input(algorithm: algorithm, data: Array(data))
        default:
            throw InputError(path: "encoding", "must be utf8 or base64")
        }
    }

    public func runInstantly(_ input: Input) -> Output {
        let digest: any Digest =
            switch input.algorithm {
            case .sha256: SHA256.hash(data: input.data)
            case .sha384: SHA384.hash(data: input.data)
            case .sha512: SHA512.hash(data: input.data)
            }
        return Output(digest: Self.hex(digest))
    }

    private static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
