/// Writes JSON text into memory reserved up front, through a pointer.
///
/// For the bulk of a response (the results of a large batch): one array allocated at its final
/// size and filled in place, where appending each piece to an array checked its capacity and
/// uniqueness a dozen times per task. The caller reserves enough (see the `bound` functions);
/// writing past the end stops the program rather than corrupt memory.
public struct ByteCursor: ~Copyable {
    private let base: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    /// How many bytes have been written.
    public private(set) var count = 0

    /// A cursor at the start of `buffer`, which must stay valid while the cursor is used.
    public init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        base = buffer.baseAddress ?? UnsafeMutablePointer(bitPattern: 1)!
        capacity = buffer.count
    }

    /// The most bytes ``string(_:)`` writes for a string of `utf8Count` UTF-8 bytes.
    public static func stringBound(utf8Count: Int) -> Int { 2 + 6 * utf8Count }

    /// The most bytes ``integer(_:)`` or ``milliseconds(_:)`` write.
    public static let numberBound = 24

    @inline(__always)
    private mutating func reserve(_ length: Int) -> UnsafeMutablePointer<UInt8> {
        precondition(length <= capacity - count, "ByteCursor: the reserved size was too small")
        defer { count += length }
        return base + count
    }

    /// Appends literal JSON text.
    public mutating func raw(_ text: StaticString) {
        let length = text.utf8CodeUnitCount
        reserve(length).update(from: text.utf8Start, count: length)
    }

    /// Counts `length` bytes that were written past ``count`` by other means (another cursor
    /// over that part of the buffer, or a copy).
    public mutating func advance(by length: Int) {
        _ = reserve(length)
    }

    /// Appends one byte.
    public mutating func byte(_ value: UInt8) {
        reserve(1).pointee = value
    }

    /// Appends bytes as they are (JSON already valid).
    public mutating func bytes(_ source: UnsafeBufferPointer<UInt8>) {
        guard let start = source.baseAddress else { return }
        reserve(source.count).update(from: start, count: source.count)
    }

    /// Appends a JSON value.
    public mutating func json(_ value: RawJSON) {
        value.bytes.withUnsafeBufferPointer { bytes($0) }
    }

    /// Appends a JSON string, escaped: at most ``stringBound(utf8Count:)`` bytes.
    public mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            let start = reserve(0)
            var out = start
            precondition(Self.stringBound(utf8Count: utf8.count) <= capacity - count, "ByteCursor: too small")
            out.pointee = UInt8(ascii: "\"")
            out += 1
            for byte in utf8 {
                if byte >= 0x20, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
                    out.pointee = byte
                    out += 1
                    continue
                }
                out.pointee = UInt8(ascii: "\\")
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out[1] = byte
                case 0x0A: out[1] = UInt8(ascii: "n")
                case 0x0D: out[1] = UInt8(ascii: "r")
                case 0x09: out[1] = UInt8(ascii: "t")
                default:
                    out[1] = UInt8(ascii: "u")
                    out[2] = UInt8(ascii: "0")
                    out[3] = UInt8(ascii: "0")
                    out[4] = Self.hexDigit(byte >> 4)
                    out[5] = Self.hexDigit(byte & 0x0F)
                    out += 4
                }
                out += 2
            }
            out.pointee = UInt8(ascii: "\"")
            out += 1
            count += out - start
        }
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }

    /// Appends an integer.
    public mutating func integer(_ value: Int) {
        precondition(Self.numberBound <= capacity - count, "ByteCursor: the reserved size was too small")
        var out = base + count
        if value < 0 {
            out.pointee = UInt8(ascii: "-")
            out += 1
        }
        var magnitude = value.magnitude
        // Digits counted first, then written from the last.
        var digits = 1
        var rest = magnitude / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        for index in stride(from: digits - 1, through: 0, by: -1) {
            out[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
        }
        count = out + digits - base
    }

    /// Writes a duration as milliseconds with microsecond precision (three decimals).
    public mutating func milliseconds(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        writeMilliseconds(micros: seconds &* 1_000_000 &+ attoseconds / 1_000_000_000_000)
    }

    /// Writes a duration given in nanoseconds as ``milliseconds(_:)`` does.
    public mutating func milliseconds(nanoseconds: Int64) {
        writeMilliseconds(micros: nanoseconds / 1000)
    }

    private mutating func writeMilliseconds(micros: Int64) {
        let micros = max(0, micros)
        integer(Int(micros / 1000))
        let fraction = Int(micros % 1000)
        let out = reserve(4)
        out[0] = UInt8(ascii: ".")
        out[1] = UInt8(ascii: "0") + UInt8(fraction / 100)
        out[2] = UInt8(ascii: "0") + UInt8(fraction / 10 % 10)
        out[3] = UInt8(ascii: "0") + UInt8(fraction % 10)
    }
}
