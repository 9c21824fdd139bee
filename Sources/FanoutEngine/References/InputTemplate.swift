#if canImport(Glibc)
    import Glibc
#endif

/// A task's `input` that contains references to earlier outputs (`{"$ref": "task#/pointer"}`) or
/// escaped literals (`{"$literal": …}`), kept as its bytes plus the places to fill in.
///
/// Filling in copies the untouched bytes around each reference as they are, so an input is never
/// parsed into a tree and re-encoded, and values keep their JSON type and spelling.
public struct InputTemplate: Sendable {
    /// One `{"$ref": …}` object inside the input.
    public struct Reference: Sendable, Equatable {
        /// The id of the task whose output it reads.
        public let taskID: String
        /// Where in that output, rooted at the output itself.
        public let pointer: JSONPointer
        /// The `$ref` text as written, for messages.
        public let text: String
        /// Where the reference sits in the input, as in ``InputError/path`` (`nil`: the whole input).
        public let path: String?
        /// The referenced task's position in the batch, once bound.
        var taskIndex = -1
    }

    private enum Piece: Sendable {
        /// Replaced by the value `references[index]` designates.
        case reference(Int)
        /// Replaced by these bytes of `base`: the value of a `$literal`, passed on unexamined.
        case literal(Range<Int>)
    }

    private let base: [UInt8]
    /// In input order, not overlapping.
    private let splices: [(range: Range<Int>, piece: Piece)]
    /// Every reference, in input order.
    public private(set) var references: [Reference]

    /// A problem in how a reference or literal is written.
    public struct Issue: Sendable, Equatable {
        /// Where in the input, as in ``InputError/path``.
        public var path: String?
        /// What is wrong, for humans.
        public var message: String
    }

    /// Finds the references and literals in `input`.
    ///
    /// - Returns: `nil` when the input has none (it is used as it is), else the template; either
    ///   way, the problems found in how references and literals are written.
    public static func parse(_ input: RawJSON) -> (template: InputTemplate?, issues: [Issue]) {
        guard mayHaveReferences(input) else { return (nil, []) }
        var parser = Parser(base: Array(input.bytes))
        do {
            var scanner = JSONScanner(bytes: parser.base, maximumDepth: .max)
            try parser.walk(&scanner, path: "")
        } catch {
            return (nil, [])  // unreachable: a RawJSON is valid JSON
        }
        guard !parser.splices.isEmpty else { return (nil, parser.issues) }
        return (
            InputTemplate(base: parser.base, splices: parser.splices, references: parser.references), parser.issues
        )
    }

    /// Whether `input` has a `$` at all: neither `"$ref"` nor `"$literal"` can appear without
    /// one, so nearly every input is done with one `memchr`.
    @inline(__always)
    static func mayHaveReferences(_ input: RawJSON) -> Bool {
        input.bytes.withUnsafeBufferPointer(mayHaveReferences)
    }

    /// The same, for an input's bytes.
    @inline(__always)
    static func mayHaveReferences(_ input: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = input.baseAddress else { return false }
        return memchr(base, Int32(UInt8(ascii: "$")), input.count) != nil
    }

    /// Records which task each reference reads; `index` maps ids to positions in the batch.
    mutating func bind(_ index: (String) -> Int?) {
        for position in references.indices {
            references[position].taskIndex = index(references[position].taskID) ?? -1
        }
    }

    /// The input with every reference replaced by the value it designates and every literal by
    /// its value.
    ///
    /// - Parameters:
    ///   - output: the output of the task at a batch position (`nil` when it has none).
    ///   - maximumBytes: the largest input the filling may produce.
    /// - Returns: the input, or a `reference_unresolved` (nothing there) or `input_too_large` error.
    public func render(output: (Int) -> RawJSON?, maximumBytes: Int = .max) -> Result<RawJSON, TaskError> {
        fill(maximumBytes: maximumBytes) { reference in
            output(reference.taskIndex).flatMap { reference.pointer.evaluate(in: $0) }
        }
    }

    /// The input with every reference replaced by `null`: what validation can check up front.
    public func placeholderInput() -> RawJSON {
        (try? fill(maximumBytes: .max) { _ in .null }.get()) ?? .null
    }

    private func fill(maximumBytes: Int, value: (Reference) -> RawJSON?) -> Result<RawJSON, TaskError> {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(base.count)
        var cursor = 0
        for splice in splices {
            bytes.append(contentsOf: base[cursor..<splice.range.lowerBound])
            cursor = splice.range.upperBound
            switch splice.piece {
            case .literal(let range):
                bytes.append(contentsOf: base[range])
            case .reference(let index):
                let reference = references[index]
                guard let value = value(reference) else {
                    return .failure(
                        TaskError(
                            code: "reference_unresolved",
                            message: "\(Self.describe(reference)) designates nothing in the output of task "
                                + "'\(reference.taskID)'"))
                }
                bytes.append(contentsOf: value.bytes)
            }
            if bytes.count > maximumBytes { return .failure(Self.tooLarge(maximumBytes)) }
        }
        bytes.append(contentsOf: base[cursor...])
        if bytes.count > maximumBytes { return .failure(Self.tooLarge(maximumBytes)) }
        return .success(RawJSON(trusted: bytes))
    }

    /// `{"$ref": "a#/x"} at input.params.id`, for messages.
    static func describe(_ reference: Reference) -> String {
        "{\"$ref\": \"\(reference.text)\"} at " + InputError.field(reference.path)
    }

    private static func tooLarge(_ maximumBytes: Int) -> TaskError {
        TaskError(
            code: "input_too_large",
            message: "the input, with its references filled in, is larger than \(maximumBytes) bytes")
    }

    /// Walks an input once, collecting splices and issues.
    private struct Parser {
        let base: [UInt8]
        var splices: [(range: Range<Int>, piece: Piece)] = []
        var references: [Reference] = []
        var issues: [Issue] = []

        init(base: [UInt8]) {
            self.base = base
        }

        mutating func walk(_ scanner: inout JSONScanner, path: String) throws(JSONScanner.SyntaxError) {
            switch try scanner.peekKind() {
            case .object:
                let start = scanner.position
                // Look at the object's members first: a `$ref` or `$literal` object is replaced
                // whole, and a `$literal`'s value is never looked into.
                var probe = scanner
                var members: [(key: String, value: Range<Int>)] = []
                try probe.beginObject()
                while let key = try probe.nextKey(first: members.isEmpty) {
                    _ = try probe.peekKind()
                    members.append((key, try probe.skipValue()))
                }
                let whole = start..<probe.position
                let issuePath = path.isEmpty ? nil : path
                if members.contains(where: { $0.key == "$ref" }) {
                    scanner = probe
                    guard members.count == 1, base[members[0].value.lowerBound] == UInt8(ascii: "\"") else {
                        issues.append(
                            Issue(
                                path: issuePath,
                                message: #"a reference is {"$ref": "<task id>#<JSON Pointer>"} with no other member; "#
                                    + #"wrap an object that really has a "$ref" member in {"$literal": …}"#))
                        return
                    }
                    var text = JSONScanner(bytes: base, startingAt: members[0].value.lowerBound, maximumDepth: 1)
                    reference(try text.readString(), at: whole, path: issuePath)
                    return
                }
                if members.contains(where: { $0.key == "$literal" }) {
                    scanner = probe
                    guard members.count == 1 else {
                        issues.append(
                            Issue(path: issuePath, message: #"a literal is {"$literal": <value>} with no other member"#))
                        return
                    }
                    splices.append((whole, .literal(members[0].value)))
                    return
                }
                try scanner.beginObject()
                var first = true
                while let key = try scanner.nextKey(first: first) {
                    first = false
                    try walk(&scanner, path: path.isEmpty ? key : path + "." + key)
                }
            case .array:
                try scanner.beginArray()
                var index = 0
                while try scanner.nextElement(first: index == 0) {
                    try walk(&scanner, path: path + "[\(index)]")
                    index += 1
                }
            default:
                _ = try scanner.skipValue()
            }
        }

        private mutating func reference(_ text: String, at range: Range<Int>, path: String?) {
            let taskID: Substring
            let pointerText: Substring
            if let hash = text.firstIndex(of: "#") {
                taskID = text[..<hash]
                pointerText = text[text.index(after: hash)...]
            } else {
                taskID = text[...]
                pointerText = ""
            }
            guard !taskID.isEmpty else {
                issues.append(Issue(path: path, message: "reference '\(text)' names no task: write \"<task id>#<JSON Pointer>\""))
                return
            }
            let pointer: JSONPointer
            do {
                pointer = try JSONPointer(String(pointerText))
            } catch {
                issues.append(Issue(path: path, message: "reference '\(text)' has a malformed JSON Pointer: \(error.message)"))
                return
            }
            splices.append((range, .reference(references.count)))
            references.append(Reference(taskID: String(taskID), pointer: pointer, text: text, path: path))
        }
    }
}
