/// A strict RFC 8259 JSON reader over UTF-8 bytes that pulls one value at a time.
///
/// The batch envelope is small and fixed, but task inputs are arbitrary and can be large. Building
/// a generic tree of every input (as `Codable` with a `JSON` enum would) dominates the cost of a
/// batch, so the scanner lets the decoder walk the envelope field by field and skip over each
/// input in one validating pass, keeping only its byte range.
struct JSONScanner {
    /// The kind of value that starts at the current position.
    enum ValueKind: Equatable {
        case object, array, string, number, bool, null
    }

    /// A syntax problem, with the byte offset where it was found.
    struct SyntaxError: Error, Equatable {
        var offset: Int
        var message: String
    }

    let bytes: [UInt8]
    private(set) var position: Int
    private let end: Int
    private let maximumDepth: Int
    private var depth = 0

    init(bytes: [UInt8], maximumDepth: Int) {
        self.bytes = bytes
        self.position = 0
        self.end = bytes.count
        self.maximumDepth = maximumDepth
    }

    /// The same scanner (at the same depth) over a copy of its bytes, moved to `position`: for
    /// a second thread to read part of the bytes on its own.
    func withCopiedBytes(startingAt position: Int) -> JSONScanner {
        var copy = JSONScanner(
            bytes: bytes.withUnsafeBufferPointer { Array($0) }, startingAt: position, maximumDepth: maximumDepth)
        copy.depth = depth
        return copy
    }

    /// Goes on from where `other`, a scanner over the same bytes, has got to.
    mutating func resume(after other: JSONScanner) {
        position = other.position
        depth = other.depth
    }

    /// A scanner that starts at `position` (the start of a value) inside `bytes`.
    init(bytes: [UInt8], startingAt position: Int, maximumDepth: Int) {
        self.init(bytes: bytes, maximumDepth: maximumDepth)
        self.position = position
    }

    // MARK: Structure

    /// Skips white space and reports which kind of value starts next.
    mutating func peekKind() throws(SyntaxError) -> ValueKind {
        skipWhitespace()
        guard position < end else { throw error("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return .object
        case UInt8(ascii: "["): return .array
        case UInt8(ascii: "\""): return .string
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool
        case UInt8(ascii: "n"): return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        default: throw error("unexpected character '\(Self.describe(bytes[position]))'")
        }
    }

    /// Consumes `{` and enters the object.
    mutating func beginObject() throws(SyntaxError) {
        try consume(UInt8(ascii: "{"), "expected '{'")
        try enter()
    }

    /// Returns the next key of the current object, or `nil` (consuming `}`) when it has no more.
    ///
    /// - Parameter first: whether no key of this object has been read yet.
    mutating func nextKey(first: Bool) throws(SyntaxError) -> String? {
        skipWhitespace()
        if peekByte() == UInt8(ascii: "}") {
            position += 1
            depth -= 1
            return nil
        }
        if !first { try consume(UInt8(ascii: ","), "expected ',' or '}'") }
        skipWhitespace()
        guard peekByte() == UInt8(ascii: "\"") else { throw error("expected a string key") }
        let key = try readString()
        skipWhitespace()
        try consume(UInt8(ascii: ":"), "expected ':'")
        return key
    }

    /// Like ``nextKey(first:)``, but identifies the key from its raw bytes without building a
    /// string: `match` gets the bytes of the key's text and returns an index, or
    /// `-1` for a key it does not know (whose text is then in `otherKey`). Returns `nil` at the
    /// end of the object.
    mutating func nextKey(
        first: Bool, otherKey: inout String, match: (UnsafeBufferPointer<UInt8>) -> Int
    ) throws(SyntaxError) -> Int? {
        // The common case first, in one pass over the buffer: `,"name":` (or `"name":` for the
        // first key), written plainly, naming a key `match` knows. Anything else (white space,
        // escapes, the object's end, an unknown key) is left to the full reading below.
        var after = 0
        let plain = bytes.withUnsafeBufferPointer { buffer -> Int? in
            var index = position
            if !first {
                guard index < end, buffer[index] == UInt8(ascii: ",") else { return nil }
                index += 1
            }
            guard index < end, buffer[index] == UInt8(ascii: "\"") else { return nil }
            index += 1
            let keyStart = index
            while index < end {
                let byte = buffer[index]
                if byte == UInt8(ascii: "\"") { break }
                if byte < 0x20 || byte >= 0x80 || byte == UInt8(ascii: "\\") { return nil }
                index += 1
            }
            guard index + 1 < end, buffer[index + 1] == UInt8(ascii: ":") else { return nil }
            let field = match(UnsafeBufferPointer(rebasing: buffer[keyStart..<index]))
            guard field >= 0 else { return nil }
            after = index + 2
            return field
        }
        if let plain {
            position = after
            return plain
        }
        skipWhitespace()
        if peekByte() == UInt8(ascii: "}") {
            position += 1
            depth -= 1
            return nil
        }
        if !first { try consume(UInt8(ascii: ","), "expected ',' or '}'") }
        skipWhitespace()
        guard peekByte() == UInt8(ascii: "\"") else { throw error("expected a string key") }
        let start = position
        let hasEscapes = try scanString()
        let keyRange = (start + 1)..<(position - 1)
        skipWhitespace()
        try consume(UInt8(ascii: ":"), "expected ':'")
        if !hasEscapes {
            // Through a buffer pointer, so that `match` borrows the key's bytes instead of being
            // handed the array (a retain and release for every key of every task).
            let index = bytes.withUnsafeBufferPointer { match(UnsafeBufferPointer(rebasing: $0[keyRange])) }
            if index >= 0 { return index }
        }
        var keyScanner = JSONScanner(bytes: bytes, maximumDepth: maximumDepth)
        keyScanner.position = start
        otherKey = try keyScanner.readString()
        guard hasEscapes else { return -1 }
        // A key spelt with escapes ("i\u0064") is still the same key.
        let decoded = Array(otherKey.utf8)
        return decoded.withUnsafeBufferPointer(match)
    }

    /// Consumes `[` and enters the array.
    mutating func beginArray() throws(SyntaxError) {
        try consume(UInt8(ascii: "["), "expected '['")
        try enter()
    }

    /// Reports whether the current array has another element, consuming `]` when it has not.
    mutating func nextElement(first: Bool) throws(SyntaxError) -> Bool {
        skipWhitespace()
        if peekByte() == UInt8(ascii: "]") {
            position += 1
            depth -= 1
            return false
        }
        if !first { try consume(UInt8(ascii: ","), "expected ',' or ']'") }
        return true
    }

    /// Checks that nothing but white space follows the top-level value.
    mutating func finish() throws(SyntaxError) {
        skipWhitespace()
        if position != end { throw error("unexpected data after the JSON value") }
    }

    // MARK: Scalars

    /// Reads a string value, resolving escapes.
    mutating func readString() throws(SyntaxError) -> String {
        let start = position
        let needsDecoding = try scanString()
        // Fast path: no escapes, and the bytes were already checked to be valid UTF-8.
        if !needsDecoding {
            // From a buffer pointer, not a slice of the array, whose making retains the array.
            let range = (start + 1)..<(position - 1)
            return bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[range]), as: UTF8.self) }
        }
        return try decodeEscapedString(from: start + 1, to: position - 1)
    }

    /// Reads a string value without making a `String` of it when it has no escapes: returns where
    /// its content lies (then its UTF-8, already checked), and the decoded string only when it
    /// has escapes.
    mutating func readStringInPlace() throws(SyntaxError) -> (content: Range<Int>, decoded: String?) {
        let start = position
        let needsDecoding = try scanString()
        let content = (start + 1)..<(position - 1)
        return (content, needsDecoding ? try decodeEscapedString(from: content.lowerBound, to: content.upperBound) : nil)
    }

    /// Reads a number value as a `Double`.
    mutating func readNumber() throws(SyntaxError) -> Double {
        let start = position
        try scanNumber()
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        guard let value = Double(text) else { throw SyntaxError(offset: start, message: "invalid number") }
        return value
    }

    /// Reads `true` or `false`.
    mutating func readBool() throws(SyntaxError) -> Bool {
        if matchLiteral("true") { return true }
        if matchLiteral("false") { return false }
        throw error("invalid literal")
    }

    /// Reads `null`.
    mutating func readNull() throws(SyntaxError) {
        if !matchLiteral("null") { throw error("invalid literal") }
    }

    /// Skips one complete value of any kind, validating it, and returns the range of its bytes.
    mutating func skipValue() throws(SyntaxError) -> Range<Int> {
        skipWhitespace()
        let start = position
        switch try peekKind() {
        case .object, .array:
            try skipContainer()
        case .string:
            _ = try scanString()
        case .number:
            try scanNumber()
        case .bool:
            _ = try readBool()
        case .null:
            try readNull()
        }
        return start..<position
    }

    /// Skips the object or array that starts at `position`, validating it, in one loop that
    /// keeps a stack of what each open container is: a call per nested value and per key was
    /// most of the cost of skipping a task's small input.
    private mutating func skipContainer() throws(SyntaxError) {
        // Bit n: whether the container n levels in from this one is an object; past 64 levels
        // (only with a raised depth limit), the rest in `deeper`.
        var objects: UInt64 = 0
        var deeper: [Bool] = []
        var level = -1
        func isObject(_ level: Int) -> Bool {
            level < 64 ? objects & (1 << UInt64(level)) != 0 : deeper[level - 64]
        }

        var opening = true  // at `{` or `[`; otherwise after a value
        while true {
            if opening {
                let object = bytes[position] == UInt8(ascii: "{")
                position += 1
                try enter()
                level += 1
                if level < 64 {
                    if object { objects |= 1 << UInt64(level) } else { objects &= ~(1 << UInt64(level)) }
                } else {
                    deeper.removeSubrange(min(level - 64, deeper.count)...)
                    deeper.append(object)
                }
                skipWhitespace()
                if peekByte() == (object ? UInt8(ascii: "}") : UInt8(ascii: "]")) {
                    opening = false
                    position += 1
                    depth -= 1
                    level -= 1
                    if level < 0 { return }
                    continue
                }
                if object { try skipMemberName() }
            } else {
                skipWhitespace()
                let object = isObject(level)
                switch peekByte() {
                case UInt8(ascii: ","):
                    position += 1
                    if object { try skipMemberName() }
                case object ? UInt8(ascii: "}") : UInt8(ascii: "]"):
                    position += 1
                    depth -= 1
                    level -= 1
                    if level < 0 { return }
                    continue
                default:
                    throw error(object ? "expected ',' or '}'" : "expected ',' or ']'")
                }
            }
            // A value.
            switch try peekKind() {
            case .object, .array:
                opening = true
                continue
            case .string: _ = try scanString()
            case .number: try scanNumber()
            case .bool: _ = try readBool()
            case .null: try readNull()
            }
            opening = false
        }
    }

    /// Skips `"name":` inside an object.
    private mutating func skipMemberName() throws(SyntaxError) {
        skipWhitespace()
        guard peekByte() == UInt8(ascii: "\"") else { throw error("expected a string key") }
        _ = try scanString()
        try consume(UInt8(ascii: ":"), "expected ':'")
    }

    // MARK: Internals

    @inline(__always)
    private func peekByte() -> UInt8? {
        position < end ? bytes[position] : nil
    }

    private func error(_ message: String) -> SyntaxError {
        SyntaxError(offset: position, message: message)
    }

    private static func describe(_ byte: UInt8) -> String {
        (0x20..<0x7F).contains(byte) ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
    }

    private mutating func enter() throws(SyntaxError) {
        depth += 1
        if depth > maximumDepth { throw error("nesting deeper than \(maximumDepth) levels") }
    }

    @inline(__always)
    private mutating func consume(_ byte: UInt8, _ message: String) throws(SyntaxError) {
        skipWhitespace()
        guard peekByte() == byte else { throw error(message) }
        position += 1
    }

    // Called before every token: inlined, with the common case (no white space at all, as in
    // compact JSON) decided by one comparison.
    @inline(__always)
    private mutating func skipWhitespace() {
        if position < end, bytes[position] > 0x20 { return }
        while position < end {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func matchLiteral(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard end - position >= count else { return false }
        let matches = literal.withUTF8Buffer { literalBytes in
            for index in 0..<count where bytes[position + index] != literalBytes[index] { return false }
            return true
        }
        if matches { position += count }
        return matches
    }

    private mutating func scanNumber() throws(SyntaxError) {
        let start = position
        if peekByte() == UInt8(ascii: "-") { position += 1 }
        guard let first = peekByte(), Self.isDigit(first) else { throw error("invalid number") }
        position += 1
        if first != UInt8(ascii: "0") {
            while let byte = peekByte(), Self.isDigit(byte) { position += 1 }
        }
        if peekByte() == UInt8(ascii: ".") {
            position += 1
            guard let byte = peekByte(), Self.isDigit(byte) else { throw error("invalid number") }
            while let byte = peekByte(), Self.isDigit(byte) { position += 1 }
        }
        if let byte = peekByte(), byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
            position += 1
            if let sign = peekByte(), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { position += 1 }
            guard let byte = peekByte(), Self.isDigit(byte) else { throw error("invalid number") }
            while let byte = peekByte(), Self.isDigit(byte) { position += 1 }
        }
        if position - start > 64 { throw SyntaxError(offset: start, message: "number too long") }
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    /// Validates a string (quotes, escapes, UTF-8) and leaves `position` after its closing quote.
    /// - Returns: whether the string contains escapes that need decoding.
    private mutating func scanString() throws(SyntaxError) -> Bool {
        position += 1  // opening quote
        var hasEscapes = false
        while position < end {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                return hasEscapes
            case UInt8(ascii: "\\"):
                hasEscapes = true
                try scanEscape()
            case 0..<0x20:
                throw error("unescaped control character in string")
            case 0x20..<0x80:
                position += 1
            default:
                try scanUTF8Sequence()
            }
        }
        throw error("unterminated string")
    }

    private mutating func scanEscape() throws(SyntaxError) {
        position += 1
        guard let byte = peekByte() else { throw error("unterminated string") }
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            position += 1
        case UInt8(ascii: "u"):
            position += 1
            let unit = try readHex4()
            if (0xD800..<0xDC00).contains(unit) {
                // A high surrogate must be followed by an escaped low surrogate.
                guard end - position >= 6, bytes[position] == UInt8(ascii: "\\"),
                    bytes[position + 1] == UInt8(ascii: "u")
                else { throw error("unpaired surrogate in \\u escape") }
                position += 2
                let low = try readHex4()
                guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate in \\u escape") }
            } else if (0xDC00..<0xE000).contains(unit) {
                throw error("unpaired surrogate in \\u escape")
            }
        default:
            throw error("invalid escape sequence")
        }
    }

    private mutating func readHex4() throws(SyntaxError) -> UInt32 {
        guard end - position >= 4 else { throw error("invalid \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    /// Validates one multi-byte UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF).
    private mutating func scanUTF8Sequence() throws(SyntaxError) {
        let lead = bytes[position]
        let length: Int
        var lowerBound: UInt8 = 0x80
        var upperBound: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            lowerBound = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            upperBound = 0x9F
        case 0xF0:
            length = 4
            lowerBound = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            upperBound = 0x8F
        default: throw error("invalid UTF-8")
        }
        guard end - position >= length else { throw error("invalid UTF-8") }
        let second = bytes[position + 1]
        guard second >= lowerBound && second <= upperBound else { throw error("invalid UTF-8") }
        for index in 2..<max(length, 2) where bytes[position + index] & 0xC0 != 0x80 {
            throw error("invalid UTF-8")
        }
        position += length
    }

    /// Decodes an already validated string body that contains escapes.
    private func decodeEscapedString(from start: Int, to stop: Int) throws(SyntaxError) -> String {
        var scalars = String.UnicodeScalarView()
        var utf8 = [UInt8]()
        var index = start
        func flush() {
            if !utf8.isEmpty {
                scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
                utf8.removeAll(keepingCapacity: true)
            }
        }
        while index < stop {
            let byte = bytes[index]
            guard byte == UInt8(ascii: "\\") else {
                utf8.append(byte)
                index += 1
                continue
            }
            flush()
            let kind = bytes[index + 1]
            index += 2
            switch kind {
            case UInt8(ascii: "b"): scalars.append("\u{08}")
            case UInt8(ascii: "f"): scalars.append("\u{0C}")
            case UInt8(ascii: "n"): scalars.append("\n")
            case UInt8(ascii: "r"): scalars.append("\r")
            case UInt8(ascii: "t"): scalars.append("\t")
            case UInt8(ascii: "u"):
                var unit = Self.hexValue(bytes, at: index)
                index += 4
                if (0xD800..<0xDC00).contains(unit) {
                    let low = Self.hexValue(bytes, at: index + 2)
                    index += 6
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(unit) else {
                    throw SyntaxError(offset: index, message: "invalid \\u escape")
                }
                scalars.append(scalar)
            default: scalars.append(Unicode.Scalar(kind))  // '"', '\\' and '/' stand for themselves
            }
        }
        flush()
        return String(scalars)
    }

    private static func hexValue(_ bytes: [UInt8], at index: Int) -> UInt32 {
        var value: UInt32 = 0
        for offset in 0..<4 {
            let byte = bytes[index + offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            default: digit = byte - UInt8(ascii: "A") + 10
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
