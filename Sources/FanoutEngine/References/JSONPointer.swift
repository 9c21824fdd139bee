/// An RFC 6901 JSON Pointer: the path to one value inside a JSON document (`/user/tags/0`).
public struct JSONPointer: Sendable, Equatable, CustomStringConvertible {
    /// The reference tokens, unescaped (`~1` is `/`, `~0` is `~`); empty for the whole document.
    public let tokens: [String]
    /// The pointer as written.
    public let description: String

    /// Why a pointer's text is not a JSON Pointer.
    public struct SyntaxError: Error, Sendable, Equatable {
        /// What is wrong, for humans.
        public let message: String
    }

    /// Parses `text`: empty (the whole document) or `/`-separated tokens, with `~0` and `~1` the
    /// only escapes.
    ///
    /// - Throws: ``SyntaxError`` when `text` does not start with `/` or has a stray `~`.
    public init(_ text: String) throws(SyntaxError) {
        description = text
        guard !text.isEmpty else {
            tokens = []
            return
        }
        guard text.utf8.first == UInt8(ascii: "/") else {
            throw SyntaxError(message: "a JSON Pointer is empty or starts with '/'")
        }
        var tokens: [String] = []
        for raw in text.utf8.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            var token: [UInt8] = []
            token.reserveCapacity(raw.count)
            var iterator = raw.makeIterator()
            while let byte = iterator.next() {
                guard byte == UInt8(ascii: "~") else {
                    token.append(byte)
                    continue
                }
                switch iterator.next() {
                case UInt8(ascii: "0"): token.append(UInt8(ascii: "~"))
                case UInt8(ascii: "1"): token.append(UInt8(ascii: "/"))
                default: throw SyntaxError(message: "'~' must be followed by 0 or 1 in a JSON Pointer")
                }
            }
            tokens.append(String(decoding: token, as: UTF8.self))
        }
        self.tokens = tokens
    }

    /// The value the pointer designates inside `document`, or `nil` when there is none: a missing
    /// member, an index past the end or not written as a plain decimal, or a step into a scalar.
    public func evaluate(in document: RawJSON) -> RawJSON? {
        let base = Array(document.bytes)
        var scanner = JSONScanner(bytes: base, maximumDepth: .max)
        do {
            for token in tokens {
                switch try scanner.peekKind() {
                case .object:
                    try scanner.beginObject()
                    var first = true
                    var found = false
                    while let key = try scanner.nextKey(first: first) {
                        first = false
                        if key == token {
                            found = true
                            break
                        }
                        _ = try scanner.skipValue()
                    }
                    guard found else { return nil }
                case .array:
                    guard let index = Self.arrayIndex(token) else { return nil }
                    try scanner.beginArray()
                    var position = 0
                    while true {
                        guard try scanner.nextElement(first: position == 0) else { return nil }
                        if position == index { break }
                        _ = try scanner.skipValue()
                        position += 1
                    }
                default:
                    return nil
                }
            }
            return RawJSON(trusted: base[try scanner.skipValue()])
        } catch {
            return nil  // unreachable: a RawJSON is valid JSON
        }
    }

    /// `0`, or digits without a leading zero (RFC 6901 §4); `-` (past the end) designates nothing.
    private static func arrayIndex(_ token: String) -> Int? {
        let digits = token.utf8
        guard !digits.isEmpty, digits.count <= 15, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            digits.count == 1 || digits.first != UInt8(ascii: "0")
        else { return nil }
        return Int(token)
    }
}
