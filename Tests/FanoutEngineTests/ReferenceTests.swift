import FanoutEngine
import Testing

@Suite("References")
struct ReferenceTests {
    static let document: RawJSON = #"""
        {"user": {"id": 42, "name": "Ada", "tags": ["a", "b", "c"]}, "a/b": 1, "m~n": 2, "": 3,
         "nested": {"list": [{"x": null}, {"x": false}]}, "0": "zero"}
        """#

    /// Each case: a pointer, and the JSON it designates in `document` (`nil`: nothing).
    @Test(
        "a JSON Pointer designates the value RFC 6901 says",
        arguments: [
            ("", #"{"user": {"id": 42, "name": "Ada", "tags": ["a", "b", "c"]}, "a/b": 1, "m~n": 2, "": 3,"#),
            ("/user/id", "42"),
            ("/user/name", #""Ada""#),
            ("/user/tags/0", #""a""#),
            ("/user/tags/2", #""c""#),
            ("/user/tags/3", nil),
            ("/user/tags/-", nil),
            ("/user/tags/01", nil),
            ("/user/tags/x", nil),
            ("/a~1b", "1"),
            ("/m~0n", "2"),
            ("/", "3"),
            ("/0", #""zero""#),
            ("/nested/list/1/x", "false"),
            ("/nested/list/0/x", "null"),
            ("/nested/list/0/x/deeper", nil),
            ("/user/missing", nil),
            ("/user/id/0", nil),
        ] as [(String, String?)])
    func pointerDesignates(pointer: String, expected: String?) throws {
        let value = try JSONPointer(pointer).evaluate(in: Self.document)
        if let expected, pointer.isEmpty {
            #expect(value?.description.hasPrefix(expected) == true)
        } else {
            #expect(value?.description == expected)
        }
    }

    @Test("malformed pointers are rejected", arguments: ["user", "/a~2", "/a~", "#/a"])
    func malformedPointer(text: String) {
        #expect(throws: JSONPointer.SyntaxError.self) { try JSONPointer(text) }
    }

    @Test("~01 unescapes to ~1, not /")
    func escapeOrder() throws {
        #expect(try JSONPointer("/~01").tokens == ["~1"])
    }

    @Test("an input without references is left alone; one with them is a template")
    func findsReferences() throws {
        #expect(InputTemplate.parse(#"{"price": "$5", "a": [1]}"#).template == nil)
        let (template, issues) = InputTemplate.parse(
            #"{"a": {"$ref": "t1#/x"}, "b": [1, {"$ref": "t2"}], "c": {"$literal": {"$ref": "kept"}}}"#)
        #expect(issues.isEmpty)
        let references = try #require(template).references
        #expect(references.map(\.taskID) == ["t1", "t2"])
        #expect(references.map(\.path) == ["a", "b[1]"])
        #expect(references.map(\.pointer.tokens) == [["x"], []])
    }

    @Test(
        "references written wrongly are reported where they are",
        arguments: [
            (#"{"a": {"$ref": "t", "other": 1}}"#, "a", "no other member"),
            (#"{"a": {"$ref": 5}}"#, "a", "no other member"),
            (##"{"a": {"$ref": "#/x"}}"##, "a", "names no task"),
            (#"{"a": {"$ref": "t#x"}}"#, "a", "malformed JSON Pointer"),
            (#"{"a": {"$literal": 1, "b": 2}}"#, "a", "no other member"),
            (#"{"$ref": "t#/~3"}"#, nil, "malformed JSON Pointer"),
        ] as [(String, String?, String)])
    func reportsMalformedReferences(input: String, path: String?, fragment: String) throws {
        let issues = InputTemplate.parse(RawJSON(validatingBytes: Array(input.utf8))!).issues
        #expect(issues.contains { $0.path == path && $0.message.contains(fragment) }, "issues were \(issues)")
    }

    @Test("validation finds unknown ids, self references and cycles up front, and checks the rest of the input")
    func validatesReferencesUpFront() {
        let found = issues(
            for: #"""
                {"tasks": [
                  {"id": "a", "op": "echo", "input": {"x": {"$ref": "nobody#/x"}}},
                  {"id": "b", "op": "echo", "input": {"$ref": "b"}},
                  {"id": "e", "op": "sleep", "input": {"ms": "soon", "note": {"$ref": "a"}}}
                ]}
                """#)
        #expect(found.contains { $0.task == .id("a") && $0.field == "input.x" && $0.message.contains("unknown task id") })
        #expect(found.contains { $0.task == .id("b") && $0.field == "input" && $0.message.contains("its own output") })
        let cycle = issues(
            for: #"""
                {"tasks": [
                  {"id": "c", "op": "echo", "input": {"$ref": "d"}},
                  {"id": "d", "op": "echo", "input": [{"$ref": "c#/0"}]}
                ]}
                """#)
        #expect(cycle.contains { $0.message.contains("cycle") }, "issues were \(cycle)")
        // Parts of an input that no reference touches are still checked before anything runs.
        #expect(found.contains { $0.task == .id("e") && $0.field == "input.ms" })
    }

    @Test("outputs flow into inputs, keeping their JSON type; a reference implies a dependency")
    func dataFlows() async throws {
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "sum", "op": "echo", "input": {"n": {"$ref": "first#/values/1"}, "all": {"$ref": "first"}}},
              {"id": "first", "op": "echo", "input": {"values": [1, 2.5e3, "x"], "ok": true}},
              {"id": "digest", "op": "hash", "input": {"algorithm": "sha256", "data": {"$ref": "first#/values/2"}}}
            ]}
            """#)
        #expect(result.status == .succeeded)
        #expect(result["sum"]?.output?.description == #"{"n": 2.5e3, "all": {"values": [1, 2.5e3, "x"], "ok": true}}"#)
        // sha256("x")
        #expect(
            result["digest"]?.output?.description
                == #"{"digest":"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}"#)
    }

    @Test("a pointer that finds nothing, or a value the operation refuses: reference_unresolved; a failed source: skipped")
    func unresolvedReferences() async throws {
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "src", "op": "echo", "input": {"ms": "not a number"}},
              {"id": "missing", "op": "echo", "input": {"$ref": "src#/nothing"}},
              {"id": "refused", "op": "sleep", "input": {"ms": {"$ref": "src#/ms"}}},
              {"id": "failed", "op": "fail", "input": {"code": "no", "message": "no"}},
              {"id": "after", "op": "echo", "input": {"$ref": "failed"}}
            ]}
            """#)
        #expect(result["missing"]?.error?.code == "reference_unresolved")
        #expect(result["missing"]?.error?.message.contains("src#/nothing") == true)
        #expect(result["refused"]?.error?.code == "reference_unresolved")
        #expect(result["refused"]?.error?.message.contains("input.ms") == true)
        #expect(result["after"]?.status == .skipped)
        #expect(result["after"]?.error?.code == "dependency_failed")
    }

    @Test("an input that grows past the limit once filled in fails with input_too_large")
    func boundsFilledInputs() async throws {
        var limits = EngineLimits()
        limits.maximumInputBytes = 100
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "a", "op": "echo", "input": "0123456789012345678901234567890123456789"},
              {"id": "b", "op": "echo", "input": [{"$ref": "a"}, {"$ref": "a"}, {"$ref": "a"}]}
            ]}
            """#, limits: limits)
        #expect(result["b"]?.error?.code == "input_too_large")
    }
}
