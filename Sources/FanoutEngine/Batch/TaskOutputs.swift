/// The outputs of a batch's tasks, by position.
///
/// An output that lies in the request body, as every `echo` output does, is kept as where it
/// lies: a ``RawJSON`` there holds a reference to the body, and retaining and releasing it each
/// time an output was measured and written was a third of writing an answer.
struct TaskOutputs: Sendable {
    /// Where an output lies in the body: `start < 0` when it is elsewhere or there is none.
    fileprivate struct Span {
        var start: Int32
        var end: Int32
        static let none = Span(start: -1, end: -1)
    }

    private let body: [UInt8]
    private var spans: [Span]
    /// The outputs that do not lie in the body; empty until there is one.
    private var others: [RawJSON?] = []

    /// `count` tasks without output, whose outputs may lie in `body`.
    init(count: Int, body: [UInt8]) {
        self.body = body
        spans = Array(repeating: .none, count: count)
    }

    subscript(index: Int) -> RawJSON? {
        get {
            let span = spans[index]
            if span.start >= 0 { return RawJSON(trusted: body[Int(span.start)..<Int(span.end)]) }
            return others.isEmpty ? nil : others[index]
        }
        set {
            if let newValue, let span = span(of: newValue) {
                spans[index] = span
                if !others.isEmpty { others[index] = nil }
                return
            }
            spans[index] = .none
            guard newValue != nil || !others.isEmpty else { return }
            if others.isEmpty { others = Array(repeating: nil, count: spans.count) }
            others[index] = newValue
        }
    }

    /// Takes the outputs of the tasks in `range` from `other`, whose body holds the same bytes
    /// as this one's (a copy of it): what lies there lies here at the same place.
    mutating func take(_ range: Range<Int>, from other: TaskOutputs) {
        precondition(other.body.count == body.count && other.spans.count == spans.count)
        spans.replaceSubrange(range, with: other.spans[range])
        // This one never set the outputs in `range`: only the other's can be there.
        guard !other.others.isEmpty else { return }
        if others.isEmpty { others = Array(repeating: nil, count: spans.count) }
        others.replaceSubrange(range, with: other.others[range])
    }

    /// Where `output` lies in the body, if it does: memory the body holds is the body's.
    private func span(of output: RawJSON) -> Span? {
        guard body.count <= Int32.max else { return nil }
        return body.withUnsafeBufferPointer { body -> Span? in
            output.bytes.withUnsafeBufferPointer { bytes -> Span? in
                guard let base = body.baseAddress, let start = bytes.baseAddress, start >= base,
                    start + bytes.count <= base + body.count
                else { return nil }
                let offset = start - base
                return Span(start: Int32(offset), end: Int32(offset + bytes.count))
            }
        }
    }

    /// How many bytes task `index`'s output has (0 without one).
    func byteCount(at index: Int) -> Int {
        let span = spans[index]
        if span.start >= 0 { return Int(span.end - span.start) }
        return others.isEmpty ? 0 : others[index]?.bytes.count ?? 0
    }

    /// Calls `read` with a reader of the outputs' bytes, valid only during the call: it reads
    /// them without retaining anything.
    func withBytes<Result>(_ read: (Reader) -> Result) -> Result {
        body.withUnsafeBufferPointer { body in
            spans.withUnsafeBufferPointer { spans in
                others.withUnsafeBufferPointer { others in
                    read(Reader(body: body, spans: spans, others: others))
                }
            }
        }
    }

    /// The outputs' bytes, during ``withBytes(_:)``.
    struct Reader {
        fileprivate let body: UnsafeBufferPointer<UInt8>
        fileprivate let spans: UnsafeBufferPointer<Span>
        fileprivate let others: UnsafeBufferPointer<RawJSON?>

        /// Writes task `index`'s output, if it has one.
        func write(_ index: Int, to cursor: inout ByteCursor) {
            let span = spans[index]
            if span.start >= 0 {
                cursor.bytes(UnsafeBufferPointer(rebasing: body[Int(span.start)..<Int(span.end)]))
            } else if !others.isEmpty, let output = others[index] {
                cursor.json(output)
            }
        }
    }
}
