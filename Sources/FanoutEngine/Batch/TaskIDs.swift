/// The tasks' ids, by position: where each lies in the request body, not a `String` per task.
///
/// Nearly every id is written without escapes, so its bytes in the body are its UTF-8 and also
/// valid JSON string content: it is kept as two 32-bit positions, compared and written back as
/// it lies. An id with escapes is decoded once, into a small buffer of its own. Made a `String`
/// only when asked for (a problem document, a job's result, a streamed line).
///
/// Ids are equal when their Unicode code points are (their UTF-8 bytes), as JSON object keys are
/// in JavaScript: not under Unicode canonical equivalence, as Swift compares strings.
public struct TaskIDs: RandomAccessCollection, Sendable {
    /// Where an id lies: `start..<end` in the body, or, when `start` is negative, `~start..<end`
    /// in `decoded`. `(0, 0)` is no id: a task whose id was missing or invalid (an id in the body
    /// starts after its quote, so never at 0).
    struct Span: Sendable {
        var start: Int32
        var end: Int32

        static let none = Span(start: 0, end: 0)
    }

    private let body: [UInt8]
    private var spans: [Span] = []
    /// The UTF-8 of the ids that had escapes, one after the other.
    private var decoded: [UInt8] = []

    init(body: [UInt8]) {
        self.body = body
    }

    public var startIndex: Int { 0 }
    /// How many tasks there are (those without a valid id included).
    public var endIndex: Int { spans.count }

    /// Task `index`'s id; empty when it had no valid one.
    public subscript(index: Int) -> String {
        withUTF8(at: index) { String(decoding: $0, as: UTF8.self) }
    }

    /// Whether task `index` has a valid id.
    public func hasID(at index: Int) -> Bool {
        spans[index].start != 0 || spans[index].end != 0
    }

    /// Calls `body` with task `index`'s id as UTF-8 (empty when it has none).
    func withUTF8<Result>(at index: Int, _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
        let span = spans[index]
        if span.start >= 0 {
            return self.body.withUnsafeBufferPointer {
                body(UnsafeBufferPointer(rebasing: $0[Int(span.start)..<Int(span.end)]))
            }
        }
        return decoded.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[Int(~span.start)..<Int(span.end)])) }
    }

    /// How many bytes ``write(_:to:)`` writes at most for task `index`.
    func jsonBound(at index: Int) -> Int {
        let span = spans[index]
        return span.start >= 0 ? 2 + Int(span.end - span.start) : ByteCursor.stringBound(utf8Count: Int(span.end - ~span.start))
    }

    /// Writes task `index`'s id as a JSON string.
    func write(_ index: Int, to cursor: inout ByteCursor) {
        let span = spans[index]
        guard span.start >= 0 else {
            cursor.string(self[index])
            return
        }
        // Its bytes in the body, between its quotes: no quote, backslash or control character
        // (the scanner has checked), so nothing to escape.
        body.withUnsafeBufferPointer { body in
            cursor.bytes(UnsafeBufferPointer(rebasing: body[Int(span.start) - 1..<Int(span.end) + 1]))
        }
    }

    // MARK: Reading

    /// Appends a task without a valid id (yet).
    mutating func appendNone() {
        spans.append(.none)
    }

    /// Gives task `index` the id that lies unescaped at `range` of the body.
    mutating func setID(at index: Int, inBody range: Range<Int>) {
        guard range.upperBound <= Int32.max else {
            // A body of 2 GiB or more, far past any sensible limit: every id is copied.
            body.withUnsafeBufferPointer { setID(at: index, decoded: UnsafeBufferPointer(rebasing: $0[range])) }
            return
        }
        spans[index] = Span(start: Int32(range.lowerBound), end: Int32(range.upperBound))
    }

    /// Gives task `index` an id that had escapes, decoded.
    mutating func setID(at index: Int, decoded id: String) {
        var id = id
        id.withUTF8 { setID(at: index, decoded: $0) }
    }

    private mutating func setID(at index: Int, decoded utf8: UnsafeBufferPointer<UInt8>) {
        let start = decoded.count
        decoded.append(contentsOf: utf8)
        spans[index] = Span(start: ~Int32(start), end: Int32(decoded.count))
    }

    /// Appends `other`'s ids, read from the same body.
    mutating func append(contentsOf other: TaskIDs) {
        guard !other.decoded.isEmpty else {
            spans.append(contentsOf: other.spans)
            return
        }
        let shift = Int32(decoded.count)
        decoded.append(contentsOf: other.decoded)
        spans.reserveCapacity(spans.count + other.spans.count)
        for var span in other.spans {
            if span.start < 0 {
                span.start = ~(~span.start + shift)
                span.end += shift
            }
            spans.append(span)
        }
    }

    mutating func reserveCapacity(_ count: Int) {
        spans.reserveCapacity(count)
    }
}

/// Finds a task's position from its id: an open-addressing table over the ids where they lie.
///
/// Its hash is cheap and keyed by a number chosen at random per process. Ids come from clients,
/// who might find many that collide under such a hash; if the table ever probes more than a few
/// times per id, it is dropped for a `Dictionary`, whose SipHash they cannot attack. So a batch
/// of colliding ids costs at most what every batch cost before the table.
///
/// A few ids (up to ``pairwiseLimit``) are compared with each other instead, with no table: for
/// a batch of one task, the table's allocation and hashing were a sixth of its decoding.
struct TaskIDLookup {
    private let ids: TaskIDs
    /// Task positions plus one; 0 is an empty slot.
    private var slots: [Int32] = []
    private var mask = 0
    /// Set instead of `slots` after too many probes.
    private var dictionary: [Key: Int]?
    /// Set when the ids are few enough to be compared one by one.
    private var isPairwise = false

    /// The most ids compared pairwise (at most 28 comparisons), without a table.
    static let pairwiseLimit = 8

    /// Whether the table gave way to a dictionary.
    var isDictionary: Bool { dictionary != nil }

    private struct Key: Hashable {
        var utf8: [UInt8]
    }

    private static let seed = UInt64.random(in: .min ... .max)

    /// The table of `ids`; `duplicate` is called, in order, with every task whose id an earlier
    /// task already has, and that task's position (the first task keeps the id).
    ///
    /// - Parameter extraProbes: how many probes past the first per id, over all ids, before the
    ///   table gives way to a dictionary. At half full, a random hash averages half a probe more
    ///   per id; many colliding ids need many more.
    /// - Parameter pairwiseLimit: up to how many ids are compared pairwise (tests lower it).
    init(
        _ ids: TaskIDs, extraProbes: Int? = nil, pairwiseLimit: Int = TaskIDLookup.pairwiseLimit,
        duplicate: (_ index: Int, _ previous: Int) -> Void
    ) {
        self.ids = ids
        guard ids.count > pairwiseLimit else {
            isPairwise = true
            for index in 0..<ids.count where ids.hasID(at: index) {
                if let previous = ids.withUTF8(at: index, { firstIndex(of: $0, before: index) }) {
                    duplicate(index, previous)
                }
            }
            return
        }
        let capacity = max(8, 1 << (Int.bitWidth - (2 * ids.count).leadingZeroBitCount))  // a power of 2 ≥ 2n
        guard capacity <= Int(Int32.max) else {
            self.dictionary = Self.dictionary(ids, duplicate: duplicate)
            return
        }
        mask = capacity - 1
        slots = [Int32](repeating: 0, count: capacity)
        var probesLeft = extraProbes ?? 4 * ids.count + 64
        var duplicates: [(index: Int, previous: Int)] = []
        for index in 0..<ids.count where ids.hasID(at: index) {
            let found = ids.withUTF8(at: index) { id -> (slot: Int, previous: Int?) in
                var slot = Int(truncatingIfNeeded: Self.hash(id)) & mask
                while slots[slot] != 0 {
                    let other = Int(slots[slot]) - 1
                    if ids.withUTF8(at: other, { $0.elementsEqual(id) }) { return (slot, other) }
                    slot = (slot + 1) & mask
                    probesLeft -= 1
                }
                return (slot, nil)
            }
            guard probesLeft >= 0 else {
                slots = []
                self.dictionary = Self.dictionary(ids, duplicate: duplicate)
                return
            }
            if let previous = found.previous {
                duplicates.append((index, previous))
            } else {
                slots[found.slot] = Int32(index + 1)
            }
        }
        // Reported once the table is known to be kept, so that a fall-back reports each once.
        for (index, previous) in duplicates { duplicate(index, previous) }
    }

    private static func dictionary(_ ids: TaskIDs, duplicate: (Int, Int) -> Void) -> [Key: Int] {
        var dictionary: [Key: Int] = [:]
        dictionary.reserveCapacity(ids.count)
        for index in 0..<ids.count where ids.hasID(at: index) {
            let key = Key(utf8: ids.withUTF8(at: index) { Array($0) })
            if let previous = dictionary[key] {
                duplicate(index, previous)
            } else {
                dictionary[key] = index
            }
        }
        return dictionary
    }

    /// The position of the (first) task whose id is `id`.
    subscript(id: String) -> Int? {
        var id = id
        return id.withUTF8 { id in
            if isPairwise { return firstIndex(of: id, before: ids.count) }
            if let dictionary { return dictionary[Key(utf8: Array(id))] }
            var slot = Int(truncatingIfNeeded: Self.hash(id)) & mask
            while slots[slot] != 0 {
                let index = Int(slots[slot]) - 1
                if ids.withUTF8(at: index, { $0.elementsEqual(id) }) { return index }
                slot = (slot + 1) & mask
            }
            return nil
        }
    }

    /// The first task before `end` whose id is `id`, found by comparing them in turn.
    private func firstIndex(of id: UnsafeBufferPointer<UInt8>, before end: Int) -> Int? {
        (0..<end).first { ids.hasID(at: $0) && ids.withUTF8(at: $0, { $0.elementsEqual(id) }) }
    }

    /// Eight bytes at a time, multiplied and mixed (the finalizer of SplitMix64), from the seed.
    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var hash = seed ^ (UInt64(bytes.count) &* 0x9E37_79B9_7F4A_7C15)
        let raw = UnsafeRawBufferPointer(bytes)
        var offset = 0
        while offset + 8 <= raw.count {
            hash = (hash ^ raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
            hash ^= hash >> 31
            offset += 8
        }
        if offset < raw.count {
            var last: UInt64 = 0
            for byte in raw[offset...].reversed() { last = last << 8 | UInt64(byte) }
            hash = (hash ^ last) &* 0xBF58_476D_1CE4_E5B9
        }
        hash ^= hash >> 30
        hash &*= 0xBF58_476D_1CE4_E5B9
        hash ^= hash >> 27
        hash &*= 0x94D0_49BB_1331_11EB
        return hash ^ (hash >> 31)
    }
}
