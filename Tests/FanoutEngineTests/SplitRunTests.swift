@testable import FanoutEngine
import Testing

/// A long batch of independent instant tasks runs, and its answer is written, in two halves at
/// once (see `BatchRunner.runAtOnce(_:splitTasks:)` and `BatchResult.jsonBytes(splittingFrom:)`):
/// each case runs or writes a batch both ways, split wherever it can be and in one piece, and
/// requires the same results, and the same bytes, exactly.
@Suite("Running and answering a batch in two halves")
struct SplitRunTests {
    /// `count` tasks of every kind an instant batch holds: outputs that lie in the body and that
    /// do not, failures with their errors, and ids with escapes.
    static func mixed(_ count: Int, extra: String = "") -> String {
        SplitDecodingTests.body(count, extra: extra) { index in
            switch index % 6 {
            case 0: #"{"id":"e\#(index)","op":"echo","input":{"n":\#(index),"s":"x\"y"}}"#
            case 1: #"{"id":"w\#(index)","op":"wrap","input":[\#(index)]}"#
            case 2: #"{"id":"f\#(index)","op":"fail","input":{"code":"c\#(index)","message":"m\u00e9"}}"#
            case 3: #"{"id":"h\#(index)","op":"hash","input":{"algorithm":"sha256","data":"\#(index)"}}"#
            case 4: #"{"id":"q\u0022\#(index)","op":"echo","input":"\#(index)"}"#
            default: #"{"id":"n\#(index)","op":"echo"}"#
            }
        }
    }

    /// Runs `json` split (wherever it can be) and in one piece.
    static func runBothWays(_ json: String) throws -> (whole: BatchResult, split: BatchResult) {
        let batch = try makeDecoder().decode(Array(json.utf8))
        #expect(batch.runsAtOnce)
        return (BatchRunner.runAtOnce(batch, splitTasks: .max), BatchRunner.runAtOnce(batch, splitTasks: 2))
    }

    @Test("a long batch gives the results, in order, that it gives run in one piece")
    func sameResults() throws {
        let (whole, split) = try Self.runBothWays(Self.mixed(601))
        #expect(split.count == 601)
        for index in 0..<whole.count {
            let (one, two) = (whole[index], split[index])
            #expect(one.id == two.id && one.status == two.status && one.error == two.error, "task \(index)")
            #expect(one.output == two.output, "task \(index)")
        }
        #expect(split.summary == whole.summary)
        #expect(split.count(.failed) == 100)
        #expect(split[600].output?.description == #"{"n":600,"s":"x\"y"}"#)
        #expect(split[301].output?.description == #"{"wrapped":true}"#)
        #expect(split[302].error?.code == "c302")
        #expect(split[598].id == "q\"598")
    }

    @Test("on_error stop and dependencies keep the batch in one piece")
    func stopAndDependencies() throws {
        // The failure at task 2 stops every task not yet run, in both halves.
        let (_, stopped) = try Self.runBothWays(Self.mixed(600, extra: #","on_error":"stop""#))
        #expect(stopped[2].status == .failed)
        #expect(stopped[3].status == .cancelled && stopped[3].error?.code == "stopped")
        #expect(stopped[599].status == .cancelled)
        let json = SplitDecodingTests.body(600) { index in
            index == 0
                ? #"{"id":"t0","op":"echo","input":0,"depends_on":["t599"]}"#
                : #"{"id":"t\#(index)","op":"echo","input":\#(index)}"#
        }
        let (_, dependent) = try Self.runBothWays(json)
        #expect(dependent.results.allSatisfy { $0.status == .succeeded })
        #expect(dependent[0].output?.description == "0")
    }

    @Test("the batch deadline stops each half")
    func deadline() throws {
        // 40 tasks of 5 ms each against a 60 ms deadline: each half runs about a dozen.
        let json = SplitDecodingTests.body(40, extra: #","timeout_ms":60"#) { #"{"id":"s\#($0)","op":"spin","input":5000}"# }
        let batch = try makeDecoder().decode(Array(json.utf8))
        let result = BatchRunner.runAtOnce(batch, splitTasks: 2)
        #expect(result[0].status == .succeeded)
        #expect(result[19].status == .cancelled && result[19].error?.code == "batch_timeout")
        #expect(result[39].status == .cancelled && result[39].error?.code == "batch_timeout")
        if TwoThreads.areAvailable {
            // The second half started with the first.
            #expect(result[20].status == .succeeded)
        }
        #expect(result.count(.succeeded) + result.count(.cancelled) == 40)
    }

    @Test("an answer written in two halves is the bytes written in one")
    func sameBytes() throws {
        for count in [2, 3, 601] {
            let (_, result) = try Self.runBothWays(Self.mixed(count))
            let whole = result.jsonBytes(splittingFrom: .max)
            #expect(result.jsonBytes(splittingFrom: 1) == whole)
            #expect(result.jsonBytes() == whole)
        }
        // Read as text where the halves meet and at both ends: outputs of different lengths, so
        // that a byte lost or doubled where the second half was moved down shows.
        let json = SplitDecodingTests.body(300) { index in
            let input = index < 150 ? String(repeating: "7", count: 1 + index % 40) : "1"
            return #"{"id":"t\#(index)","op":"echo","input":\#(input)}"#
        }
        let (_, result) = try Self.runBothWays(json)
        #expect(result.jsonBytes(splittingFrom: 1) == result.jsonBytes(splittingFrom: .max))
        let text = String(decoding: result.jsonBytes(splittingFrom: 1), as: UTF8.self)
        #expect(text.hasPrefix(#"{"status":"succeeded","results":[{"id":"t0","status":"succeeded","output":7,"#))
        #expect(text.contains(#"{"id":"t299","status":"succeeded","output":1,"duration_ms":"#))
        // Task 149 ends the first half (an output of thirty 7s), task 150 begins the second.
        #expect(text.contains(#"{"id":"t149","status":"succeeded","output":\#(String(repeating: "7", count: 30)),"#))
        #expect(text.contains(#"},{"id":"t150","status":"succeeded","output":1,"#))
    }
}
