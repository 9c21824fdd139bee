/// One complete, already validated JSON value, kept as its UTF-8 bytes.
///
/// Task inputs stay in this form until their operation decodes them, and outputs are written into
/// the response as they are, so a value that only passes through (as with `echo`) is never parsed
/// into a tree and never re-encoded.
public struct RawJSON: Sendable, Hashable, CustomStringConvertible {
    /// The UTF-8 bytes of the value. They may share storage with the request body.
    public let bytes: ArraySlice<UInt8>

    /// Wraps bytes that the caller guarantees to be one valid JSON value.
    init(trusted bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
    }

    /// Wraps bytes that the caller guarantees to be one valid JSON value.
    init(trusted bytes: [UInt8]) {
        self.bytes = bytes[...]
    }

    /// Parses and validates `bytes` as exactly one JSON value.
    ///
    /// - Parameters:
    ///   - bytes: UTF-8 JSON text.
    ///   - maximumDepth: the deepest nesting of objects and arrays accepted.
    /// - Throws: `RawJSON.ParseError` describing the first syntax problem.
    public init(validating bytes: [UInt8], maximumDepth: Int = 64) throws(ParseError) {
        var scanner = JSONScanner(bytes: bytes, maximumDepth: maximumDepth)
        do {
            let range = try scanner.skipValue()
            try scanner.finish()
            self.bytes = bytes[range]
        } catch {
            throw ParseError(offset: error.offset, message: error.message)
        }
    }

    /// JSON `null`.
    public static let null = RawJSON(trusted: Array("null".utf8))

    /// The JSON text.
    public var description: String { String(decoding: bytes, as: UTF8.self) }

    /// Encodes `value` with `JSONEncoder`.
    ///
    /// - Throws: whatever `JSONEncoder` throws (for example for a non-finite number).
    public init(encoding value: some Encodable) throws {
        self.init(trusted: try JSONCoding.encode(value))
    }

    /// Decodes the value into `type` with `JSONDecoder`.
    ///
    /// - Throws: `DecodingError` when the value does not fit the type.
    public func decode<Value: Decodable>(_ type: Value.Type) throws -> Value {
        try JSONCoding.decode(type, from: bytes)
    }

    /// Decodes the value as an operation's input, describing any mismatch in JSON terms.
    ///
    /// - Throws: ``InputError`` naming the offending field; Swift type names never reach a client.
    public func decodeInput<Value: Decodable>(_ type: Value.Type) throws(InputError) -> Value {
        do {
            return try decode(type)
        } catch {
            throw InputError(decodingError: error)
        }
    }

    /// A syntax error in JSON text.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        /// Byte offset of the problem in the text.
        public let offset: Int
        /// What is wrong, for humans.
        public let message: String

        public var description: String { "\(message) at byte \(offset)" }
    }
}

extension RawJSON: ExpressibleByStringLiteral {
    /// Creates a value from JSON text written in the source, such as an operation's input schema.
    ///
    /// Invalid JSON in a literal is a programming error and stops the program.
    public init(stringLiteral text: String) {
        do {
            try self.init(validating: Array(text.utf8))
        } catch {
            preconditionFailure("invalid JSON literal: \(error)")
        }
    }
}

/// What kind of JSON value a ``RawJSON`` holds.
public enum JSONKind: Sendable, Equatable {
    case object, array, string, number, bool, null
}

extension RawJSON {
    /// The kind of value.
    public var kind: JSONKind {
        var scanner = JSONScanner(bytes: Array(bytes.prefix(1)), maximumDepth: .max)
        switch try? scanner.peekKind() {
        case .object: return .object
        case .array: return .array
        case .string: return .string
        case .number: return .number
        case .bool: return .bool
        default: return .null
        }
    }

    /// The members of a JSON object in the order written, or `nil` when the value is not an
    /// object. A repeated key appears as often as it is written.
    public func orderedMembers() -> [(key: String, value: RawJSON)]? {
        var members: [(key: String, value: RawJSON)] = []
        return forEachMember { members.append(($0, $1)) } ? members : nil
    }

    /// The members of a JSON object, or `nil` when the value is not an object.
    ///
    /// For operations whose input is a small flat object: cheaper than `JSONDecoder`, which
    /// dominates the cost of a short task.
    public func objectMembers() -> [String: RawJSON]? {
        var members: [String: RawJSON] = [:]
        return forEachMember { members[$0] = $1 } ? members : nil
    }

    /// Calls `body` with each member of a JSON object, in order; `false` when the value is not one.
    private func forEachMember(_ body: (String, RawJSON) -> Void) -> Bool {
        let base = Array(bytes)
        var scanner = JSONScanner(bytes: base, maximumDepth: .max)
        guard (try? scanner.peekKind()) == .object else { return false }
        do {
            try scanner.beginObject()
            var first = true
            while let key = try scanner.nextKey(first: first) {
                first = false
                body(key, RawJSON(trusted: base[try scanner.skipValue()]))
            }
        } catch {
            return false  // unreachable: the bytes were validated when the RawJSON was made
        }
        return true
    }

    /// The elements of a JSON array, or `nil` when the value is not an array.
    public func arrayElements() -> [RawJSON]? {
        let base = Array(bytes)
        var scanner = JSONScanner(bytes: base, maximumDepth: .max)
        guard (try? scanner.peekKind()) == .array else { return nil }
        var elements: [RawJSON] = []
        do {
            try scanner.beginArray()
            while try scanner.nextElement(first: elements.isEmpty) {
                elements.append(RawJSON(trusted: base[try scanner.skipValue()]))
            }
        } catch {
            return nil  // unreachable: the bytes were validated when the RawJSON was made
        }
        return elements
    }

    /// The value as an integer, when it is a JSON number with no fractional part that fits `Int`.
    public var integerValue: Int? {
        var scanner = JSONScanner(bytes: Array(bytes), maximumDepth: 1)
        guard (try? scanner.peekKind()) == .number, let value = try? scanner.readNumber(),
            value.rounded() == value, abs(value) < 1e15
        else { return nil }
        return Int(value)
    }

    /// The value as a string, when it is a JSON string.
    public var stringValue: String? {
        var scanner = JSONScanner(bytes: Array(bytes), maximumDepth: 1)
        guard (try? scanner.peekKind()) == .string else { return nil }
        return try? scanner.readString()
    }

    /// Wraps bytes that must be one valid JSON value; `nil` when they are not.
    public init?(validatingBytes bytes: some Collection<UInt8>, maximumDepth: Int = 512) {
        guard let value = try? RawJSON(validating: Array(bytes), maximumDepth: maximumDepth) else { return nil }
        self = value
    }

    /// Wraps bytes already known to be one valid JSON value, such as text a ``JSONWriter`` wrote.
    public init(writtenBy writer: JSONWriter) {
        self.init(trusted: writer.bytes)
    }
}
