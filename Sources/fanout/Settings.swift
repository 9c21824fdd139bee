import ArgumentParser

#if canImport(Glibc)
    import Glibc
#endif

/// Resolves an option from the command line, then the environment, then its default.
enum Settings {
    static func string(_ commandLine: String?, _ variable: String) throws -> String? {
        if let commandLine { return commandLine }
        guard let value = getenv(variable) else { return nil }
        let text = String(cString: value)
        return text.isEmpty ? nil : text
    }

    static func integer(_ commandLine: Int?, _ variable: String, default fallback: Int, range: ClosedRange<Int>) throws
        -> Int
    {
        let value: Int
        if let commandLine {
            value = commandLine
        } else if let text = try string(nil, variable) {
            guard let parsed = Int(text) else { throw ValidationError("\(variable) must be an integer, not '\(text)'") }
            value = parsed
        } else {
            value = fallback
        }
        guard range.contains(value) else {
            throw ValidationError(
                "\(variable.lowercased()) must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return value
    }
}
