import FanoutEngine
import Testing

@Suite("JSON validation")
struct JSONTests {
    @Test(
        "valid JSON is accepted",
        arguments: [
            "null", "true", "false", "0", "-0.5e-3", "\"\"", "\"\\u00e9\\ud83d\\ude00\"", "[]", "{}",
            "[1, {\"a\": [\"b\"]}]", " \n\t 7 ", "\"é😀\"", "{\"a\":{\"b\":[1,{\"c\":null}]},\"d\":[]}",
            "[[],[[]],{},[{}]]", "{ \"a\" : [ 1 , 2 ] , \"b\" : { } }",
        ])
    func acceptsValid(text: String) throws {
        let json = try RawJSON(validating: Array(text.utf8))
        #expect(json.description == text.trimmingWhitespace())
    }

    @Test(
        "invalid JSON is rejected",
        arguments: [
            "", "nul", "01", "1.", "-", "+1", "[1,]", "{\"a\"}", "{\"a\":1,}", "'x'", "\"\\x\"", "\"\\ud800\"",
            "\"\\udc00\"", "[1] [2]", "{1: 2}", "\"tab\there\"", "[1 2]", "{\"a\":1 \"b\":2}", "{\"a\" 1}", "[}",
            "{]", "{\"a\":[1}", "[{\"a\":1]", "{,}", "[,1]", "{\"a\":}", "[", "{\"a\":1", "[[1],", "{\"a\":{}",
        ])
    func rejectsInvalid(text: String) {
        #expect(throws: RawJSON.ParseError.self) { try RawJSON(validating: Array(text.utf8)) }
    }

    @Test(
        "malformed UTF-8 is rejected",
        arguments: [
            [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xC0, 0xAF, 0x22],
            [0x22, 0xF5, 0x80, 0x80, 0x80, 0x22],
        ]
            as [[UInt8]])
    func rejectsBadUTF8(bytes: [UInt8]) {
        #expect(throws: RawJSON.ParseError.self) { try RawJSON(validating: bytes) }
    }

    @Test("nesting beyond the limit is rejected")
    func limitsDepth() {
        #expect(throws: RawJSON.ParseError.self) { try RawJSON(validating: Array("[[[[1]]]]".utf8), maximumDepth: 3) }
        #expect(throws: Never.self) { try RawJSON(validating: Array("[[[1]]]".utf8), maximumDepth: 3) }
    }

    @Test("past 64 levels (a raised limit), objects and arrays still close in order")
    func deepNesting() throws {
        let opening = (0..<80).map { $0 % 2 == 0 ? "[" : "{\"k\":" }
        let closing = (0..<80).reversed().map { $0 % 2 == 0 ? "]" : "}" }
        let valid = opening.joined() + "1" + closing.joined()
        #expect(throws: Never.self) { try RawJSON(validating: Array(valid.utf8), maximumDepth: 100) }
        #expect(throws: RawJSON.ParseError.self) { try RawJSON(validating: Array(valid.utf8), maximumDepth: 79) }
        // The deepest two closers swapped.
        var swapped = closing
        swapped.swapAt(0, 1)
        let invalid = opening.joined() + "1" + swapped.joined()
        #expect(throws: RawJSON.ParseError.self) { try RawJSON(validating: Array(invalid.utf8), maximumDepth: 100) }
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        let trimmed = drop { " \n\t".contains($0) }
        return String(trimmed.reversed().drop { " \n\t".contains($0) }.reversed())
    }
}
