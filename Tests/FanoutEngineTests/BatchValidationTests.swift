@testable import FanoutEngine
import Testing

@Suite("Batch validation")
struct BatchValidationTests {
    /// Each case: a body, then a field and a message fragment that must be among the issues.
    @Test(
        "invalid batches are rejected with the problem named",
        arguments: [
            (#"[]"#, "body", "JSON object"),
            (#"{"tasks": []}"#, "tasks", "at least one"),
            (#"{}"#, "tasks", "required"),
            (#"{"tasks": {}}"#, "tasks", "array"),
            (#"{"tasks": [1]}"#, "tasks[0]", "object"),
            (#"{"tasks": [{"op": "echo"}]}"#, "id", "required"),
            (#"{"tasks": [{"id": 5, "op": "echo"}]}"#, "id", "string"),
            (#"{"tasks": [{"id": "", "op": "echo"}]}"#, "id", "1 to 128"),
            (#"{"tasks": [{"id": "a"}]}"#, "op", "required"),
            (#"{"tasks": [{"id": "a", "op": "nope"}]}"#, "op", "unknown operation"),
            (#"{"tasks": [{"id": "a", "op": "sleep"}]}"#, "input", "an object"),
            (#"{"tasks": [{"id": "a", "op": "sleep", "input": {}}]}"#, "input.ms", "required"),
            (#"{"tasks": [{"id": "a", "op": "sleep", "input": {"ms": "x"}}]}"#, "input.ms", "integer"),
            (#"{"tasks": [{"id": "a", "op": "sleep", "input": {"ms": -1}}]}"#, "input.ms", "between"),
            (
                #"{"tasks": [{"id": "a", "op": "hash", "input": {"algorithm": "md5", "data": ""}}]}"#,
                "input.algorithm", "sha256"
            ),
            (
                #"{"tasks": [{"id": "a", "op": "hash", "input": {"algorithm": "sha256", "data": "!", "encoding": "base64"}}]}"#,
                "input.data", "base64"
            ),
            (#"{"tasks": [{"id": "a", "op": "echo"}, {"id": "a", "op": "echo"}]}"#, "id", "duplicate"),
            (#"{"tasks": [{"id": "a", "op": "echo", "depends_on": ["b"]}]}"#, "depends_on", "unknown task id"),
            (#"{"tasks": [{"id": "a", "op": "echo", "depends_on": ["a"]}]}"#, "depends_on", "itself"),
            (#"{"tasks": [{"id": "a", "op": "echo", "depends_on": "b"}]}"#, "depends_on", "array"),
            (
                #"{"tasks": [{"id": "a", "op": "echo", "depends_on": ["b"]}, {"id": "b", "op": "echo", "depends_on": ["a"]}]}"#,
                "depends_on", "cycle"
            ),
            (#"{"tasks": [{"id": "a", "op": "echo", "timeout_ms": 0}]}"#, "timeout_ms", "positive integer"),
            (#"{"tasks": [{"id": "a", "op": "echo", "timeout_ms": 1.5}]}"#, "timeout_ms", "positive integer"),
            (#"{"tasks": [{"id": "a", "op": "echo", "colour": 1}]}"#, "colour", "not a task field"),
            (#"{"tasks": [{"id": "a", "op": "echo"}], "concurrency": 0}"#, "concurrency", "positive integer"),
            (#"{"tasks": [{"id": "a", "op": "echo"}], "on_error": "explode"}"#, "on_error", "continue"),
            (#"{"tasks": [{"id": "a", "op": "echo"}], "extra": true}"#, "extra", "not a batch field"),
            (#"{"tasks": [{"id": "a", "op": "echo"}], "tasks": []}"#, "tasks", "more than once"),
            (#"{"tasks": [{"id": "a", "op": "echo", "input": {"x": 1}}"#, "body", "malformed JSON"),
            (#"{"tasks": [{"id": "a\ud800", "op": "echo"}]}"#, "body", "surrogate"),
            ("{\"tasks\": [{\"id\": \"a\u{1}\", \"op\": \"echo\"}]}", "body", "control character"),
            (#"{"tasks": [{"id": "a", "op": "echo"}]} x"#, "body", "after the JSON value"),
        ])
    func rejectsInvalidBatch(body: String, field: String, fragment: String) {
        let found = issues(for: body)
        #expect(found.contains { $0.field == field && $0.message.contains(fragment) }, "issues were \(found)")
    }

    @Test("a batch field given twice is reported once, at its second appearance; an unknown one first as unknown")
    func repeatedBatchFields() {
        let found = issues(
            for: #"{"tasks": [{"id": "a", "op": "echo"}], "concurrency": 2, "extra": 1, "on_error": "stop", "#
                + #""concurrency": 3, "extra": 2, "timeout_ms": 5, "on_error": "stop", "timeout_ms": 6, "tasks": [], "other": 1}"#)
        let described = found.map { "\($0.field): \($0.message)" }
        #expect(
            described == [
                "extra: is not a batch field", "concurrency: appears more than once", "extra: appears more than once",
                "on_error: appears more than once", "timeout_ms: appears more than once",
                "tasks: appears more than once", "other: is not a batch field",
            ], "issues were \(described)")
    }

    @Test("each task's operation is its own, when it repeats the previous one's name or nearly")
    func operationNamesCompared() throws {
        let names = ["echo", "echo", #"ech\u006f"#, "wrap", "wrap", "echo", "spin", "echo"]
        let tasks = names.enumerated().map { #"{"id":"t\#($0.offset)","op":"\#($0.element)","input":1}"# }
        let batch = try makeDecoder().decode(Array(#"{"tasks":[\#(tasks.joined(separator: ","))]}"#.utf8))
        #expect(batch.tasks.indices.map(batch.operation(of:)) == ["echo", "echo", "echo", "wrap", "wrap", "echo", "spin", "echo"])
        do {
            _ = try makeDecoder().decode(Array(#"{"tasks":[{"id":"a","op":"echo"},{"id":"b","op":"echp"}]}"#.utf8))
            Issue.record("decoded an unknown operation")
        } catch {
            #expect(error.issues.map(\.message) == ["unknown operation 'echp'; GET /ops lists them"])
        }
    }

    @Test("task keys are told apart by every byte")
    func tellsTaskKeysApart() {
        func field(_ key: String) -> Int {
            Array(key.utf8).withUnsafeBufferPointer(BatchDecoder.taskField)
        }
        #expect(["id", "op", "input", "depends_on", "timeout_ms"].map(field) == [0, 1, 2, 3, 4])
        let nearMisses = [
            "", "i", "di", "iD", "Id", "po", "oq", "inpu", "inputs", "Input", "inpus", "jnput",
            "depends_om", "depends_On", "dependson_", "Depends_on", "timeout_mz", "timeout-ms", "timeout_sm",
            "timeout_ms_", "xd", "depends_ontimeout_ms",
        ]
        #expect(nearMisses.map(field) == Array(repeating: -1, count: nearMisses.count))
    }

    @Test("a raw-JSON operation's input is checked unless it accepts any")
    func checksRawJSONInputs() {
        let body = #"{"tasks":[{"id":"a","op":"spin","input":"soon"},{"id":"b","op":"echo","input":"soon"}]}"#
        do {
            _ = try makeDecoder().decode(Array(body.utf8))
            Issue.record("decoded a batch with an invalid input")
        } catch {
            #expect(error.issues.map(\.task) == [.id("a")])
            #expect(error.issues.map(\.message) == ["must be a number of microseconds, 0 to 100000"])
        }
        #expect(EchoOperation().acceptsAnyInput && !SpinOperation().acceptsAnyInput)
    }

    @Test("every problem in a batch is listed, not only the first")
    func listsEveryProblem() {
        let found = issues(
            for: #"""
                {"tasks": [
                  {"id": "a", "op": "nope"},
                  {"id": "b", "op": "sleep", "input": {"ms": -1}},
                  {"id": "c", "op": "echo", "depends_on": ["zzz"]}
                ], "on_error": 3}
                """#)
        #expect(found.count == 4)
        #expect(found.contains { $0.task == .id("a") && $0.field == "op" })
        #expect(found.contains { $0.task == .id("b") && $0.field == "input.ms" })
        #expect(found.contains { $0.task == .id("c") && $0.field == "depends_on" })
        #expect(found.contains { $0.task == nil && $0.field == "on_error" })
    }

    @Test("a task without a usable id is named by its index")
    func namesTaskByIndexWithoutId() {
        let found = issues(for: #"{"tasks": [{"id": "a", "op": "echo"}, {"op": "nope"}]}"#)
        #expect(!found.isEmpty)
        #expect(found.allSatisfy { $0.task == .index(1) })
    }

    @Test("limits on tasks, id length and nesting depth are enforced")
    func enforcesLimits() throws {
        var limits = EngineLimits()
        limits.maximumTasks = 2
        limits.maximumIdLength = 3
        limits.maximumDepth = 5
        let tooMany = #"{"tasks": [{"id": "a", "op": "echo"}, {"id": "b", "op": "echo"}, {"id": "c", "op": "echo"}]}"#
        #expect(throws: BatchValidationError.self) { try decode(tooMany, limits: limits) }
        let longId = #"{"tasks": [{"id": "abcd", "op": "echo"}]}"#
        #expect(throws: BatchValidationError.self) { try decode(longId, limits: limits) }
        let deep = #"{"tasks": [{"id": "a", "op": "echo", "input": [[[1]]]}]}"#
        #expect(throws: BatchValidationError.self) { try decode(deep, limits: limits) }
        let shallow = #"{"tasks": [{"id": "a", "op": "echo", "input": [[1]]}]}"#
        #expect(throws: Never.self) { try decode(shallow, limits: limits) }
    }

    @Test("timeouts and concurrency above the server maximum are capped, not rejected")
    func capsToServerMaximum() throws {
        var limits = EngineLimits()
        limits.maximumConcurrency = 4
        limits.maximumTaskTimeoutMilliseconds = 1000
        limits.maximumBatchTimeoutMilliseconds = 2000
        let batch = try decode(
            #"{"tasks": [{"id": "a", "op": "echo", "timeout_ms": 99999}], "concurrency": 50, "timeout_ms": 99999}"#,
            limits: limits)
        #expect(batch.concurrency == 4)
        #expect(batch.timeout == .milliseconds(2000))
        #expect(batch.tasks[0].timeout == .milliseconds(1000))
        // Found by Schemathesis: integers too large for a Double to hold exactly are still integers.
        let huge = try decode(
            #"{"tasks": [{"id": "a", "op": "echo", "timeout_ms": 1e300}], "concurrency": 659896842135640832}"#,
            limits: limits)
        #expect(huge.concurrency == 4)
        #expect(huge.tasks[0].timeout == .milliseconds(1000))
    }

    @Test("field names written with escapes are the same fields")
    func acceptsEscapedFieldNames() throws {
        let batch = try decode(#"{"tasks": [{"i\u0064": "a", "\u006fp": "sleep", "input": {"ms": 1}}]}"#)
        #expect(batch.ids[0] == "a")
    }

    @Test("an id is counted in characters, and escapes are decoded")
    func decodesIds() throws {
        let batch = try decode(#"{"tasks": [{"id": "caf\u00e9 \"x\" 😀", "op": "echo"}]}"#)
        #expect(batch.ids[0] == "café \"x\" 😀")
    }
}
