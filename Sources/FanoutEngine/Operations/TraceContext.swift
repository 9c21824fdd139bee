import Synchronization

/// W3C Trace Context for one call a batch makes: the client's trace continued when its
/// `traceparent` is valid, else a trace of the request's own.
///
/// Every `http` sub-request carries `traceparent: 00-<trace id>-<span id>-<flags>` with a span id
/// of its own (each call is a span of Fanout's), and the client's `tracestate` unchanged. Without
/// a client trace, the trace id is derived from the request id, so that every call of one
/// request (and of the job it submitted, on whichever host runs it) shares one trace. Fanout
/// records no spans itself. Made only for `http` tasks: other batches pay nothing for it.
public struct TraceContext: Sendable, Equatable {
    /// 32 lower-case hex digits, not all zero.
    public let traceID: String
    /// Fanout's span id for the request: 16 lower-case hex digits, not all zero.
    public let spanID: String
    /// The client's trace flags (`01` sampled), `00` for a trace of Fanout's.
    public let flags: String
    /// The client's `tracestate`, passed on as it came.
    public let state: String?

    /// Continues `traceparent` when it is valid (version `00`, or a later version read as `00`
    /// says); else the trace of `requestID` (a random one without it).
    public init(continuing traceparent: String?, state: String?, requestID: String? = nil) {
        spanID = Self.randomHex(bytes: 8)
        if let traceparent, let (traceID, flags) = Self.parse(traceparent) {
            self.traceID = traceID
            self.flags = flags
            self.state = state.flatMap { $0.isEmpty || $0.utf8.count > 512 ? nil : $0 }
        } else {
            traceID = requestID.map(Self.traceID(of:)) ?? Self.randomHex(bytes: 16)
            flags = "00"
            self.state = nil
        }
    }

    /// 32 hex digits from `requestID`: FNV-1a over its bytes, spread by SplitMix64; the same on
    /// every host.
    static func traceID(of requestID: String) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in requestID.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        var generator = SplitMix64(state: hash)
        return hex([generator.next(), generator.next() | 1])
    }

    private static func hex(_ words: [UInt64]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: words.count * 16) { buffer in
            var index = 0
            for var word in words {
                for _ in 0..<16 {
                    buffer[index] = digits[Int(word & 0xF)]
                    word >>= 4
                    index += 1
                }
            }
            return index
        }
    }

    /// The `traceparent` header of a sub-request.
    public var traceparent: String { "00-\(traceID)-\(spanID)-\(flags)" }

    /// The trace id and flags of a valid `traceparent`.
    static func parse(_ header: String) -> (traceID: String, flags: String)? {
        let fields = header.split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count >= 4, fields[0].count == 2, isHex(fields[0]), fields[0] != "ff" else { return nil }
        // Version 00 has exactly four fields; later versions may append more.
        if fields[0] == "00" && fields.count != 4 { return nil }
        let (traceID, parentID, flags) = (fields[1], fields[2], fields[3])
        guard traceID.count == 32, isHex(traceID), traceID.contains(where: { $0 != "0" }),
            parentID.count == 16, isHex(parentID), parentID.contains(where: { $0 != "0" }),
            flags.count == 2, isHex(flags)
        else { return nil }
        return (String(traceID), String(flags))
    }

    private static func isHex(_ text: Substring) -> Bool {
        text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// `bytes` random bytes as lower-case hex; never all zero.
    ///
    /// From ``FastRandom``: ids and trace ids need to be unique and unpredictable enough to
    /// spread, not secret, and the system generator costs a system call each time.
    ///
    /// - Precondition: `bytes` is a multiple of 8.
    public static func randomHex(bytes: Int) -> String {
        precondition(bytes > 0 && bytes % 8 == 0)
        var generator = FastRandom()
        return hex((0..<bytes / 8).map { $0 == 0 ? generator.next() | 1 : generator.next() })
    }
}

/// SplitMix64 over one process-wide atomic counter, seeded once from the system's generator: a
/// random-looking 64-bit value per call without a system call or a lock.
struct FastRandom: RandomNumberGenerator {
    private static let state: Atomic<UInt64> = {
        var system = SystemRandomNumberGenerator()
        return Atomic(system.next())
    }()

    mutating func next() -> UInt64 {
        SplitMix64.mix(Self.state.wrappingAdd(SplitMix64.increment, ordering: .relaxed).newValue)
    }
}

/// SplitMix64 (Steele, Lea and Flood): a sequence of well-spread 64-bit values from any seed.
struct SplitMix64: RandomNumberGenerator {
    static let increment: UInt64 = 0x9E37_79B9_7F4A_7C15
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= Self.increment
        return Self.mix(state)
    }

    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
