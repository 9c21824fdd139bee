@testable import FanoutEngine
import Testing

@Suite("Task ids")
struct TaskIDsTests {
    private func decode(_ json: String) throws(BatchValidationError) -> Batch {
        try makeDecoder().decode(Array(json.utf8))
    }

    private func issues(_ json: String) -> [ValidationIssue] {
        do {
            _ = try decode(json)
            return []
        } catch {
            return error.issues
        }
    }

    @Test("ids with and without escapes read back, and are written back as JSON")
    func readsBack() throws {
        let batch = try decode(
            #"{"tasks":[{"id":"plain","op":"echo"},{"id":"tab\there \"q\" \u00e9","op":"echo"},{"id":"ünï","op":"echo"}]}"#)
        #expect(Array(batch.ids) == ["plain", "tab\there \"q\" é", "ünï"])
        let answer = String(decoding: BatchRunner.runAtOnce(batch).jsonBytes(), as: UTF8.self)
        #expect(answer.contains(#"{"id":"plain","#))
        #expect(answer.contains(#"{"id":"tab\there \"q\" é","#))
        #expect(answer.contains(#"{"id":"ünï","#))
    }

    @Test("ids are equal when their code points are: escaped or not, but not under canonical equivalence")
    func equality() throws {
        let escaped = issues(#"{"tasks":[{"id":"ab","op":"echo"},{"id":"\u0061b","op":"echo"}]}"#)
        #expect(escaped.map(\.message) == ["duplicate id 'ab' (also used by task 0)"])
        // "é" as one code point, and as "e" with a combining accent: two ids.
        let batch = try decode(#"{"tasks":[{"id":"\u00e9","op":"echo"},{"id":"e\u0301","op":"echo"}]}"#)
        #expect(batch.tasks.count == 2)
        // A dependency written with escapes finds its task.
        let linked = try decode(
            #"{"tasks":[{"id":"first","op":"echo"},{"id":"second","op":"echo","depends_on":["f\u0069rst"]}]}"#)
        #expect(linked.tasks[1].dependencies == [0])
    }

    @Test("the table and the dictionary it gives way to find the same tasks and duplicates")
    func tableAndDictionaryAgree() throws {
        let tasks = (0..<300).map { #"{"id":"task-\#($0 % 250)-with-a-longer-id","op":"echo"}"# }
        var body = Array(#"{"tasks":["#.utf8)
        body += Array(tasks.joined(separator: ",").utf8)
        body += Array("]}".utf8)
        var ids = TaskIDs(body: body)
        // The ids, found where they lie in the body, as the decoder does.
        var search = 0
        for index in 0..<300 {
            ids.appendNone()
            let start = body[search...].firstRange(of: Array(#""id":""#.utf8))!.upperBound
            let end = body[start...].firstIndex(of: UInt8(ascii: "\""))!
            ids.setID(at: index, inBody: start..<end)
            search = end
        }
        #expect(ids[299] == "task-49-with-a-longer-id")
        var fromTable: [(Int, Int)] = []
        let table = TaskIDLookup(ids) { fromTable.append(($0, $1)) }
        var fromPairs: [(Int, Int)] = []
        let pairwise = TaskIDLookup(ids, pairwiseLimit: 300) { fromPairs.append(($0, $1)) }
        #expect(fromTable.map(\.0) == fromPairs.map(\.0) && fromTable.map(\.1) == fromPairs.map(\.1))
        var fromDictionary: [(Int, Int)] = []
        let dictionary = TaskIDLookup(ids, extraProbes: 0) { fromDictionary.append(($0, $1)) }
        #expect(!table.isDictionary && dictionary.isDictionary)
        #expect(fromTable.count == 50)
        #expect(fromTable.map(\.0) == fromDictionary.map(\.0) && fromTable.map(\.1) == fromDictionary.map(\.1))
        #expect(fromTable.allSatisfy { $0.1 == $0.0 - 250 })
        for index in 0..<250 {
            let id = "task-\(index)-with-a-longer-id"
            #expect(table[id] == index && dictionary[id] == index && pairwise[id] == index)
        }
        #expect(table["task-250-with-a-longer-id"] == nil && dictionary["task-1-with-a-longer"] == nil)
        #expect(pairwise["task-250-with-a-longer-id"] == nil && pairwise["task-1-with-a-longer"] == nil)
    }

    @Test("a few ids, compared pairwise: duplicates reported in order against the first, lookups find the first")
    func fewIds() throws {
        for (names, duplicates) in [
            (["a"], [(Int, Int)]()),
            (["a", "b", "a", "c", "b", "a"], [(2, 0), (4, 1), (5, 0)]),
            (["x", "x", "x", "x", "x", "x", "x", "x"], (1..<8).map { ($0, 0) }),
        ] {
            let tasks = names.map { #"{"id":"\#($0)","op":"echo"}"# }
            let batchIssues = issues(#"{"tasks":[\#(tasks.joined(separator: ","))]}"#)
            #expect(
                batchIssues.map(\.message)
                    == duplicates.map { "duplicate id '\(names[$0.0])' (also used by task \($0.1))" })
        }
        let linked = try decode(
            #"{"tasks":[{"id":"a","op":"echo"},{"id":"b","op":"echo","depends_on":["a"]},{"id":"c","op":"echo"}]}"#)
        #expect(linked.tasks[1].dependencies == [0])
        #expect(issues(#"{"tasks":[{"id":"a","op":"echo","depends_on":["z"]}]}"#).map(\.message) == ["unknown task id 'z'"])
    }
}
