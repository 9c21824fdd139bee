import FanoutEngine
import FuzzSupport

// A task input with references and a task output, as a client sends them (parts cut at a zero
// byte). Filling the references in never produces invalid JSON, never grows past its limit, and
// every pointer prints back to itself.
fuzzMain { start, count in
    let parts = FuzzInput(start, count).parts(3)
    let pointerText = String(decoding: parts[2], as: UTF8.self)
    guard let output = RawJSON(validatingBytes: parts[1], maximumDepth: 64) else { return 0 }
    if let pointer = try? JSONPointer(pointerText) {
        require((try? JSONPointer(pointer.description)) == pointer, "pointer \(pointerText) does not print back")
        if let found = pointer.evaluate(in: output) {
            require(RawJSON(validatingBytes: found.bytes) != nil, "pointer \(pointerText) found invalid JSON")
        }
    }
    guard let input = RawJSON(validatingBytes: parts[0], maximumDepth: 64) else { return 0 }
    let (template, _) = InputTemplate.parse(input)
    guard let template else { return 0 }
    for reference in template.references {
        require((try? JSONPointer(reference.pointer.description)) == reference.pointer, "\(reference.text)")
    }
    let limit = 1 << 16
    switch template.render(output: { _ in output }, maximumBytes: limit) {
    case .success(let filled):
        require(filled.bytes.count <= limit, "filled input of \(filled.bytes.count) bytes passed the limit")
        require(RawJSON(validatingBytes: filled.bytes) != nil, "filled input is not JSON: \(filled)")
    case .failure(let error):
        require(["reference_unresolved", "input_too_large"].contains(error.code), "unexpected \(error.code)")
    }
    require(RawJSON(validatingBytes: template.placeholderInput().bytes) != nil, "placeholder input is not JSON")
    return 0
}
