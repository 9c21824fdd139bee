@testable import FanoutEngine
import Testing

@Suite("Task outputs")
struct TaskOutputsTests {
    @Test("outputs in the body and elsewhere read and write back as they were stored")
    func storesBothKinds() {
        let body = Array(#"{"tasks":[{"input":{"a":1}}]}"#.utf8)
        let inBody = RawJSON(trusted: body[19..<26])  // {"a":1}, a slice of the body
        #expect(inBody.description == #"{"a":1}"#)
        let elsewhere: RawJSON = #"[1,2]"#
        let equalButElsewhere = RawJSON(trusted: Array(#"{"a":1}"#.utf8))
        var outputs = TaskOutputs(count: 4, body: body)
        outputs[0] = inBody
        outputs[1] = elsewhere
        outputs[2] = equalButElsewhere
        #expect(outputs[0] == inBody && outputs[1] == elsewhere && outputs[2] == equalButElsewhere)
        #expect(outputs[3] == nil)
        #expect((0..<4).map(outputs.byteCount(at:)) == [7, 5, 7, 0])
        // Replaced: a slot moves from the body to elsewhere and back, or to nothing.
        outputs[0] = elsewhere
        outputs[1] = inBody
        outputs[2] = nil
        #expect(outputs[0] == elsewhere && outputs[1] == inBody && outputs[2] == nil)
        let written = [UInt8](unsafeUninitializedCapacity: 64) { buffer, count in
            var cursor = ByteCursor(buffer)
            outputs.withBytes { reader in
                for index in 0..<4 { reader.write(index, to: &cursor) }
            }
            count = cursor.count
        }
        #expect(String(decoding: written, as: UTF8.self) == #"[1,2]{"a":1}"#)
    }
}
