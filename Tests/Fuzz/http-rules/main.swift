import FanoutHTTP
import FuzzSupport

// What a task and an upstream may put in the parts of an `http` call that Fanout checks by
// itself (parts cut at a zero byte): a path with placeholders and a value for them, a header
// name and value, and an upstream's Retry-After.
fuzzMain { start, count in
    let parts = FuzzInput(start, count).strings(5)
    checkPath(parts[0], value: parts[1])
    checkHeader(name: parts[2], value: parts[3])
    if let wait = RetryPolicy.retryAfter(parts[4], now: 1_800_000_000) {
        require(wait >= .zero, "Retry-After \(parts[4]) gave a negative wait")
    }
    return 0
}

/// A path that passes the checks stays under the upstream's base once filled in: each value is
/// one segment, no segment decodes to `.` or `..`, and nothing outside a path's characters appears.
private func checkPath(_ path: String, value: String) {
    guard RequestRules.problem(inPath: path, allowPlaceholders: true) == nil else { return }
    let names = RequestRules.placeholders(in: path)
    guard !names.isEmpty else {
        return require(RequestRules.problem(inPath: path, allowPlaceholders: false) == nil, "\(path)")
    }
    guard RequestRules.problem(inParameterValue: value) == nil else { return }
    let filled = RequestRules.fill(path, parameters: Dictionary(names.map { ($0, value) }) { first, _ in first })
    require(filled.hasPrefix("/") && !filled.contains("//"), "\(path) filled with \(value) is \(filled)")
    for segment in filled.split(separator: "/", omittingEmptySubsequences: false) {
        let decoded = percentDecoded(segment)
        require(decoded != Array(".".utf8) && decoded != Array("..".utf8), "\(path) filled with \(value) climbs: \(filled)")
    }
    require(
        filled.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && !"\\?#{}".utf8.contains($0) },
        "\(path) filled with \(value) has a character a path may not: \(filled)")
    for prefix in ["/", "/a", "/public"] where RequestRules.isUnder(filled, prefixes: [prefix]) {
        require(filled == prefix || filled.hasPrefix(prefix == "/" ? "/" : prefix + "/"), "\(filled) under \(prefix)")
    }
}

/// A header a task may set has a token for a name and a value that cannot split the request.
private func checkHeader(name: String, value: String) {
    let lower = name.lowercased()
    if RequestRules.problem(inTaskHeader: lower) == nil {
        require(RequestRules.isToken(lower), "header name \(lower) is not a token")
        require(!["host", "authorization", "cookie", "transfer-encoding"].contains(lower), "\(lower) allowed")
    }
    if RequestRules.isValidHeaderValue(value) {
        require(!value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }), "header value splits")
    }
}

/// `text` with each `%XX` decoded, as an upstream that decodes paths sees it.
private func percentDecoded(_ text: Substring) -> [UInt8] {
    let bytes = Array(text.utf8)
    var decoded: [UInt8] = []
    var index = 0
    while index < bytes.count {
        if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
            let value = UInt8(String(decoding: bytes[index + 1...index + 2], as: UTF8.self), radix: 16)
        {
            decoded.append(value)
            index += 3
        } else {
            decoded.append(bytes[index])
            index += 1
        }
    }
    return decoded
}
