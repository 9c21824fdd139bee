/// Appends JSON text to a byte buffer without building intermediate values.
///
/// The response of a large batch is mostly task outputs that are already JSON; writing the
/// envelope around them directly keeps encoding linear and allocation-free per task.
public struct JSONWriter: Sendable {
    /// The text written so far.
    public private(set) var bytes: [UInt8]

    /// Creates an empty writer.
    public init(reservingCapacity capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends literal JSON text.
    public mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// Appends a JSON value.
    public mutating func json(_ value: RawJSON) {
        bytes.append(contentsOf: value.bytes)
    }

    /// Appends bytes that are already one valid JSON value (stored results, say).
    public mutating func trustedJSON(_ value: [UInt8]) {
        bytes.append(contentsOf: value)
    }

    /// Appends a JSON string, escaped.
    public mutating func string(_ value: String) {
        write(upTo: ByteCursor.stringBound(utf8Count: value.utf8.count)) { $0.string(value) }
    }

    /// Appends an integer.
    public mutating func integer(_ value: Int) {
        write(upTo: ByteCursor.numberBound) { $0.integer(value) }
    }

    /// Writes a duration as milliseconds with microsecond precision (three decimals).
    public mutating func milliseconds(_ duration: Duration) {
        write(upTo: ByteCursor.numberBound + 4) { $0.milliseconds(duration) }
    }

    /// Appends what `body` writes, at most `bound` bytes, in one step.
    public mutating func write(upTo bound: Int, _ body: (inout ByteCursor) -> Void) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: bound) { buffer in
            var cursor = ByteCursor(buffer)
            body(&cursor)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<cursor.count]))
        }
    }
}
