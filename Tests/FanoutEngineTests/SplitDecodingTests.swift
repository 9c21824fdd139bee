@testable import FanoutEngine
import Testing

/// A long tasks array is decoded in two halves at once (see `BatchDecoder.decodeInTwo`): each
/// case decodes a body both ways, split wherever it can be (`splitBytes: 1`) and in one piece,
/// and requires the same batch, or the same issues, exactly.
@Suite("Decoding a batch in two halves")
struct SplitDecodingTests {
    /// `count` tasks, each written by `task(index)`, as a batch body.
    static func body(_ count: Int, extra: String = "", _ task: (Int) -> String) -> String {
        #"{"tasks": ["# + (0..<count).map(task).joined(separator: ", ") + "]" + extra + "}"
    }

    /// Where the split is guessed for `body`, and whether a task really starts there.
    static func guess(_ body: String) throws -> (position: Int, isElement: Bool)? {
        let bytes = Array(body.utf8)
        var scanner = JSONScanner(bytes: bytes, maximumDepth: 64)
        try scanner.beginObject()
        _ = try scanner.nextKey(first: true)
        try scanner.beginArray()
        guard let position = BatchDecoder.guessSplit(scanner) else { return nil }
        // A real element boundary is where the one-piece reading has an element start.
        var reader = scanner
        var first = true
        while try reader.nextElement(first: first) {
            first = false
            if reader.position == position { return (position, true) }
            _ = try reader.skipValue()
        }
        return (position, false)
    }

    /// Decodes `json` both ways; returns the batch (run) or the error, which must agree.
    @discardableResult
    static func expectSame(_ json: String, limits: EngineLimits = EngineLimits()) async throws -> BatchResult? {
        let whole = Result { try makeDecoder(limits: limits, splitBytes: .max).decode(Array(json.utf8)) }
        let split = Result { try makeDecoder(limits: limits, splitBytes: 1).decode(Array(json.utf8)) }
        switch (whole, split) {
        case (.failure(let wholeError), .failure(let splitError)):
            #expect(wholeError as? BatchValidationError == splitError as? BatchValidationError)
            return nil
        case (.success(let wholeBatch), .success(let splitBatch)):
            #expect(wholeBatch.ids.map { Array($0.utf8) } == splitBatch.ids.map { Array($0.utf8) })
            #expect(wholeBatch.tasks.indices.map(wholeBatch.operation(of:)) == splitBatch.tasks.indices.map(splitBatch.operation(of:)))
            #expect(wholeBatch.tasks.map(\.dependencies) == splitBatch.tasks.map(\.dependencies))
            #expect(wholeBatch.runsAtOnce == splitBatch.runsAtOnce)
            let wholeResult = await BatchRunner.run(wholeBatch)
            let splitResult = await BatchRunner.run(splitBatch)
            for index in 0..<wholeResult.count {
                let (one, two) = (wholeResult[index], splitResult[index])
                #expect(one.id == two.id && one.status == two.status && one.error == two.error)
                #expect(one.output == two.output, "task \(index)")
            }
            return splitResult
        default:
            Issue.record("one way decoded, the other did not: \(whole), \(split)")
            return nil
        }
    }

    @Test("a batch of echoes, with and without white space")
    func echoes() async throws {
        for separator in ["", " ", "\n  "] {
            let json = Self.body(1000) { #"{"id":"t\#($0)",\#(separator)"op":"echo","input":{"n":\#($0)}}"# }
                .replacingOccurrences(of: ", ", with: ",\(separator)")
            let guess = try #require(try Self.guess(json))
            #expect(guess.isElement)
            let result = try #require(try await Self.expectSame(json))
            #expect(result.count == 1000)
            #expect(result[999].output?.description == #"{"n":999}"#)
        }
    }

    @Test("ids with escapes in both halves, and a dependency on one across them")
    func escapedIds() async throws {
        // Every seventh id has an escape, so each half decodes some into its own buffer, which
        // the join appends to the first's.
        let json = Self.body(300) { index in
            let id = index % 7 == 0 ? #"e\u0073c-\#(index)"# : "plain-\(index)"
            let dependsOn = index == 290 ? #","depends_on":["esc-\u0037"]"# : ""
            return #"{"id":"\#(id)","op":"echo","input":\#(index)\#(dependsOn)}"#
        }
        let result = try #require(try await Self.expectSame(json))
        #expect(result.results.map(\.id) == (0..<300).map { $0 % 7 == 0 ? "esc-\($0)" : "plain-\($0)" })
        let batch = try makeDecoder(splitBytes: 1).decode(Array(json.utf8))
        #expect(batch.tasks[290].dependencies == [7])
    }

    @Test("operations first met in a different order in each half")
    func operationsInEachHalf() async throws {
        // Two raw-JSON operations: the first half meets `echo` and `hash`, then `wrap`; the second
        // meets `wrap` before `echo`, so its raw-JSON operation numbers are the other way round and
        // must be renumbered when the halves are joined.
        let json = Self.body(400) { index in
            switch index {
            case ..<100 where index % 2 == 0: #"{"id":"e\#(index)","op":"echo","input":[\#(index)]}"#
            case ..<100: #"{"id":"h\#(index)","op":"hash","input":{"algorithm":"sha256","data":"\#(index)"}}"#
            case ..<300: #"{"id":"w\#(index)","op":"wrap","input":[\#(index)]}"#
            default: #"{"id":"e\#(index)","op":"echo","input":[\#(index)]}"#
            }
        }
        // The second half starts among the `wrap` tasks.
        let guess = try #require(try Self.guess(json))
        #expect(guess.isElement)
        #expect(json.utf8.dropFirst(guess.position).starts(with: #" {"id":"w"#.utf8))
        let result = try #require(try await Self.expectSame(json))
        #expect(result[0].output?.description == "[0]")
        #expect(result[1].status == .succeeded && result[1].id == "h1")
        #expect(result[250].output?.description == #"{"wrapped":true}"#)
        #expect(result[350].output?.description == "[350]")
    }

    @Test("dependencies and references across the halves")
    func dependenciesAcrossHalves() async throws {
        let json = Self.body(300) { index in
            switch index {
            case 0: #"{"id":"t0","op":"echo","input":{"v":1},"depends_on":["t299"]}"#
            case 299: #"{"id":"t299","op":"echo","input":{"v":2}}"#
            case 250: ##"{"id":"t250","op":"echo","input":{"from":{"$ref":"t0#/v"}},"depends_on":["t1"]}"##
            default: #"{"id":"t\#(index)","op":"echo","input":\#(index)}"#
            }
        }
        let result = try #require(try await Self.expectSame(json))
        #expect(result[250].output?.description == #"{"from":1}"#)
    }

    @Test("invalid tasks in both halves are reported by the same positions")
    func issuesInBothHalves() async throws {
        let json = Self.body(200) { index in
            switch index {
            case 10, 150: "7"  // not an object: named as tasks[i]
            case 20, 160: #"{"op":"echo"}"#  // no id: named by index
            case 30, 170: #"{"id":"same","op":"echo"}"#  // a duplicate across the halves
            case 180: #"{"id":"x","op":"nope"}"#
            case 190: #"{"id":"y","op":"echo","depends_on":["t5","missing"]}"#
            default: #"{"id":"t\#(index)","op":"echo"}"#
            }
        }
        #expect(try Self.guess(json)?.isElement == true)
        try await Self.expectSame(json)
        let error = try #require(throws: BatchValidationError.self) {
            try makeDecoder(splitBytes: 1).decode(Array(json.utf8))
        }
        #expect(error.issues.contains { $0.task == .index(150) && $0.field == "tasks[150]" })
        #expect(error.issues.contains { $0.task == .index(160) && $0.field == "id" })
    }

    @Test("a syntax error in either half is the one the whole body has")
    func syntaxErrors() async throws {
        for broken in [20, 180] {
            let json = Self.body(200) { index in
                index == broken ? #"{"id":"t\#(index)","op":"echo","input":{"a":tru}}"# : #"{"id":"t\#(index)","op":"echo"}"#
            }
            try await Self.expectSame(json)
        }
        // Broken after the array, and a second error past the guess: the first one counts.
        try await Self.expectSame(Self.body(200, extra: #", "concurrency": }"#) { #"{"id":"t\#($0)","op":"echo"}"# })
    }

    @Test("past the task limit, the same tasks are kept and the same count reported", arguments: [150, 50])
    func overTheLimit(limit: Int) async throws {
        // With 50, the first half alone is past the limit.
        var limits = EngineLimits()
        limits.maximumTasks = limit
        let json = Self.body(200) { index in
            index == 160 || index == 30 ? #"{"op":"echo"}"# : #"{"id":"t\#(index)","op":"echo"}"#
        }
        try await Self.expectSame(json, limits: limits)
        let error = try #require(throws: BatchValidationError.self) {
            try makeDecoder(limits: limits, splitBytes: 1).decode(Array(json.utf8))
        }
        #expect(error.issues.contains { $0.field == "tasks" && $0.message.contains("has 200 tasks") })
    }

    @Test("a guess inside a string is found out, and the batch read in one piece")
    func guessInsideAString() async throws {
        // The middle of the body falls in a long string full of `},{`.
        let filler = String(repeating: "},{", count: 2000)
        let json = Self.body(3) { index in
            index == 1 ? #"{"id":"t1","op":"echo","input":"\#(filler)"}"# : #"{"id":"t\#(index)","op":"echo"}"#
        }
        let guess = try #require(try Self.guess(json))
        #expect(!guess.isElement)
        let result = try #require(try await Self.expectSame(json))
        #expect(result[1].output?.description == "\"\(filler)\"")
    }
}
