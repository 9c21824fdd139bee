import FanoutEngine
import FuzzSupport

// Any bytes, as a request body or an upstream's response body. The scanner either refuses them
// at an offset inside the input, or accepts them; then every part of the document is valid JSON
// on its own, and the walkers agree with one another about it.
fuzzMain { start, count in
    let input = FuzzInput(start, count)
    do throws(RawJSON.ParseError) {
        let document = try RawJSON(validating: input.bytes)
        check(document, depth: 0)
    } catch {
        require(error.offset >= 0 && error.offset <= input.bytes.count, "offset \(error.offset) outside the input")
    }
    return 0
}

private func check(_ value: RawJSON, depth: Int) {
    require(RawJSON(validatingBytes: value.bytes) != nil, "a part of a valid document is not valid: \(value)")
    switch value.kind {
    case .object:
        guard let members = value.orderedMembers(), let unique = value.objectMembers() else {
            return require(false, "an object's members cannot be read: \(value)")
        }
        require(unique.count <= members.count, "more distinct keys than members")
        require(Set(members.map(\.key)).count == unique.count, "the two member walkers disagree")
        for member in members { check(member.value, depth: depth + 1) }
    case .array:
        guard let elements = value.arrayElements() else { return require(false, "an array's elements cannot be read") }
        for element in elements { check(element, depth: depth + 1) }
    case .string:
        require(value.stringValue != nil, "a valid string cannot be read: \(value)")
    case .number:
        require(value.stringValue == nil && value.arrayElements() == nil, "a number read as something else")
        _ = value.integerValue
    case .bool, .null:
        require(value.integerValue == nil && value.stringValue == nil, "a literal read as a number or string")
    }
}
