#if canImport(Glibc)
    import Glibc
#endif

/// The CGI parameters of one request, as nginx sent them (`REQUEST_METHOD`, `DOCUMENT_URI`,
/// `HTTP_*` headers, …).
///
/// Kept as the bytes libfcgi received, copied in one block; a value becomes a `String` only when
/// asked for. nginx sends about twenty parameters and a request reads five to eight: building a
/// dictionary of them all (hashing, a string per name and value) was a tenth of the responder's
/// time on a small request.
public struct FastCGIParameters: Sendable {
    /// One parameter: `name` is `storage[nameStart..<valueStart - 1]` (an `=` follows it), its
    /// value runs to `valueEnd`.
    private struct Field: Sendable {
        var nameStart: Int32
        var valueStart: Int32
        var valueEnd: Int32
    }

    /// `NAME=VALUE` back to back, in the order received.
    private var storage: [UInt8] = []
    private var fields: [Field] = []

    /// No parameters.
    public init() {}

    /// The parameters in `dictionary` (tests, and requests built by hand).
    public init(_ dictionary: [String: String]) {
        for (name, value) in dictionary { self[name] = value }
    }

    /// Copies libfcgi's `NAME=VALUE` strings, which die at the request's end.
    init(environment: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
        guard var entry = environment else { return }
        storage.reserveCapacity(2048)
        fields.reserveCapacity(32)
        while let pointer = entry.pointee {
            let bytes = UnsafeRawBufferPointer(start: pointer, count: strlen(pointer))
            if let equals = bytes.firstIndex(of: UInt8(ascii: "=")) {
                let start = storage.count
                storage.append(contentsOf: bytes)
                fields.append(
                    Field(
                        nameStart: Int32(start), valueStart: Int32(start + equals + 1),
                        valueEnd: Int32(start + bytes.count)))
            }
            entry += 1
        }
    }

    /// The value of the parameter `name`, or `nil`; setting replaces it (or adds it), setting
    /// `nil` removes it.
    public subscript(name: String) -> String? {
        // A closure, not `map(value(at:))`: a method reference boxes a copy of `self` on the heap.
        get { index(of: name).map { value(at: $0) } }
        set {
            if let existing = index(of: name) { fields.remove(at: existing) }
            guard let newValue else { return }
            let start = storage.count
            storage.append(contentsOf: name.utf8)
            storage.append(UInt8(ascii: "="))
            storage.append(contentsOf: newValue.utf8)
            fields.append(
                Field(
                    nameStart: Int32(start), valueStart: Int32(start + name.utf8.count + 1),
                    valueEnd: Int32(storage.count)))
        }
    }

    /// The `HTTP_*` parameter nginx made of the request header `name` (`"Idempotency-Key"` →
    /// `HTTP_IDEMPOTENCY_KEY`), found without building that name.
    public func header(_ name: String) -> String? {
        var name = name
        return name.withUTF8 { header in
            lastIndex { bytes, start, length in
                guard length == header.count + 5, bytes[start] == UInt8(ascii: "H"),
                    bytes[start + 1] == UInt8(ascii: "T"), bytes[start + 2] == UInt8(ascii: "T"),
                    bytes[start + 3] == UInt8(ascii: "P"), bytes[start + 4] == UInt8(ascii: "_")
                else { return false }
                for offset in 0..<header.count where bytes[start + 5 + offset] != Self.cgiByte(header[offset]) {
                    return false
                }
                return true
            }
        }.map { value(at: $0) }
    }

    /// The field named exactly `name`.
    private func index(of name: String) -> Int? {
        var name = name
        return name.withUTF8 { wanted in
            lastIndex { bytes, start, length in
                length == wanted.count && (length == 0 || memcmp(bytes + start, wanted.baseAddress!, length) == 0)
            }
        }
    }

    /// How nginx writes a header name's byte in a CGI name: upper case, `-` as `_`.
    private static func cgiByte(_ byte: UInt8) -> UInt8 {
        if byte == UInt8(ascii: "-") { return UInt8(ascii: "_") }
        return byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 32 : byte
    }

    /// The last field whose name `matches` (storage, the name's start and its length): a name set
    /// again replaces the earlier one. The buffers are entered once for the whole search.
    private func lastIndex(where matches: (UnsafePointer<UInt8>, Int, Int) -> Bool) -> Int? {
        guard !fields.isEmpty else { return nil }
        return storage.withUnsafeBufferPointer { bytes in
            fields.withUnsafeBufferPointer { fields in
                for index in fields.indices.reversed() {
                    let field = fields[index]
                    let start = Int(field.nameStart)
                    if matches(bytes.baseAddress!, start, Int(field.valueStart) - start - 1) { return index }
                }
                return nil
            }
        }
    }

    private func value(at index: Int) -> String {
        let field = fields[index]
        return storage[Int(field.valueStart)..<Int(field.valueEnd)].withUnsafeBufferPointer {
            String(decoding: $0, as: UTF8.self)
        }
    }
}
