import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Writes each log line to stderr with one `write(2)`, as logfmt or as JSON.
///
/// logfmt: `time=2026-11-29T19:02:17.123Z level=info msg=request key=value …`, a value quoted
/// (with `\"`, `\\`, `\n` escapes) when it is empty or holds a space, `=`, a quote or a control
/// character. JSON: one object per line with the same members, every value a string.
///
/// swift-log's `StreamLogHandler` formats the local time with `strftime` and takes a lock around
/// `fwrite` and `fflush` for every line; with a line per request that was about 15% of the
/// responder's time on small requests. One `write` of a line under 4 KiB is atomic on a pipe,
/// so lines from different threads never interleave and no lock is needed.
public struct StderrLogHandler: LogHandler {
    /// How lines are written.
    public enum Format: String, Sendable {
        case logfmt, json
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let format: Format
    private let write: @Sendable (String) -> Void

    /// Creates a handler.
    ///
    /// - Parameter write: where lines go; stderr when omitted (tests capture them).
    public init(
        label: String, level: Logger.Level, format: Format = .logfmt,
        write: @escaping @Sendable (String) -> Void = StderrLogHandler.writeToStderr
    ) {
        self.label = label
        logLevel = level
        self.format = format
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // The request log line carries only its own metadata: skip merging for it.
        let merged =
            metadata.isEmpty ? (event.metadata ?? [:]) : event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
        var members: [(String, String)] = [
            ("time", Self.timestamp()), ("level", "\(event.level)"), ("msg", "\(event.message)"),
        ]
        if label != "fanout" { members.append(("logger", label)) }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            members.append((key, "\(value)"))
        }
        write(format == .json ? Self.json(members) : Self.logfmt(members))
    }

    /// `key=value …` and a newline.
    static func logfmt(_ members: [(String, String)]) -> String {
        var line = ""
        line.reserveCapacity(200)
        for (index, (key, value)) in members.enumerated() {
            if index > 0 { line += " " }
            line += key
            line += "="
            if needsQuotes(value) {
                line += "\""
                escape(value, into: &line)
                line += "\""
            } else {
                line += value
            }
        }
        line += "\n"
        return line
    }

    /// `{"key":"value",…}` and a newline.
    static func json(_ members: [(String, String)]) -> String {
        var line = "{"
        line.reserveCapacity(220)
        for (index, (key, value)) in members.enumerated() {
            if index > 0 { line += "," }
            line += "\""
            escape(key, into: &line)
            line += "\":\""
            escape(value, into: &line)
            line += "\""
        }
        line += "}\n"
        return line
    }

    private static func needsQuotes(_ value: String) -> Bool {
        value.isEmpty
            || value.utf8.contains { $0 <= 0x20 || $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\"") || $0 == 0x7F }
    }

    /// Escapes quotes, backslashes and control characters the way JSON does (and logfmt readers
    /// accept).
    private static func escape(_ value: String, into line: inout String) {
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": line += "\\\""
            case "\\": line += "\\\\"
            case "\n": line += "\\n"
            case "\r": line += "\\r"
            case "\t": line += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                line += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: line.unicodeScalars.append(scalar)
            }
        }
    }

    /// Writes `line` to descriptor 2 in one call.
    public static let writeToStderr: @Sendable (String) -> Void = { line in
        var line = line
        line.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// `2026-11-29T19:02:17.123Z`; the part up to the seconds is formatted once per second.
    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let milliseconds = now.tv_nsec / 1_000_000
        let seconds = cachedSecond.withLockedValue { cache -> String in
            if cache.second != now.tv_sec {
                var time = tm()
                var epoch = now.tv_sec
                gmtime_r(&epoch, &time)
                var buffer = [CChar](repeating: 0, count: 32)
                let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &time)
                cache = (now.tv_sec, String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            return cache.text
        }
        let fraction = String(milliseconds + 1000).dropFirst()
        return "\(seconds).\(fraction)Z"
    }

    private static let cachedSecond = NIOLockedValueBox<(second: Int, text: String)>((-1, ""))
}
