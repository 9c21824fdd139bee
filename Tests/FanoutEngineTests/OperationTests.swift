import FanoutEngine
import Testing

@Suite("Built-in operations")
struct OperationTests {
    @Test(
        "hash produces the standard digests",
        arguments: [
            ("sha256", "abc", "utf8", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("sha256", "YWJj", "base64", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                "sha384", "abc", "utf8",
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
            ),
            (
                "sha512", "abc", "utf8",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
            ),
        ])
    func hashes(algorithm: String, data: String, encoding: String, digest: String) async throws {
        let result = try await run(
            #"{"tasks": [{"id": "h", "op": "hash", "input": {"algorithm": "\#(algorithm)", "data": "\#(data)", "encoding": "\#(encoding)"}}]}"#
        )
        #expect(result["h"]?.output?.description == #"{"digest":"\#(digest)"}"#)
    }

    @Test(
        "null is not a missing optional field: hash's encoding and fail's message must be strings",
        arguments: [
            #"{"id": "t", "op": "hash", "input": {"algorithm": "sha256", "data": "", "encoding": null}}"#,
            #"{"id": "t", "op": "fail", "input": {"code": "x", "message": null}}"#,
        ])
    func nullOptionalFields(task: String) {
        let decoder = BatchDecoder(registry: .builtIns(limits: EngineLimits()), limits: EngineLimits())
        #expect(throws: BatchValidationError.self) { try decoder.decode(Array(#"{"tasks": [\#(task)]}"#.utf8)) }
    }

    @Test("sleep reports how long it slept")
    func sleeps() async throws {
        let result = try await run(#"{"tasks": [{"id": "s", "op": "sleep", "input": {"ms": 20}}]}"#)
        #expect(result["s"]?.output?.description == #"{"slept_ms":20}"#)
        #expect(try #require(result["s"]).duration >= .milliseconds(20))
    }

    @Test("echo returns the input bytes unchanged, null by default")
    func echoes() async throws {
        let result = try await run(
            #"{"tasks": [{"id": "e", "op": "echo", "input": {"a" : [1.5e3, true, null, "\u00e9"]}}, {"id": "n", "op": "echo"}]}"#
        )
        #expect(result["e"]?.output?.description == #"{"a" : [1.5e3, true, null, "\u00e9"]}"#)
        #expect(result["n"]?.output?.description == "null")
    }

    @Test("fail fails with the given code, and a default message")
    func fails() async throws {
        let result = try await run(#"{"tasks": [{"id": "f", "op": "fail", "input": {"code": "teapot"}}]}"#)
        #expect(result["f"]?.error == TaskError(code: "teapot", message: "failed as requested"))
    }
}
