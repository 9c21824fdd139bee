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
    private let write: @Sendable ([UInt8]) -> Void

    /// Creates a handler.
    ///
    /// - Parameter write: where lines go; stderr when omitted (tests capture them).
    public init(
        label: String, level: Logger.Level, format: Format = .logfmt,
        write: @escaping @Sendable ([UInt8]) -> Void = StderrLogHandler.writeToStderr
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
        // Bytes appended in place: this runs once per request, and building strings of strings
        // for it cost more than the rest of the request's logging.
        var line = LineWriter(json: format == .json)
        line.member("time", Self.timestamp())
        line.member("level", event.level.rawValue)
        line.member("msg", event.message.description)
        if label != "fanout" { line.member("logger", label) }
        // In the order the dictionary holds them: the same for the same keys, and sorting them
        // was a tenth of the line's cost.
        for (key, value) in merged {
            switch value {
            case .string(let text): line.member(key, text)
            case .stringConvertible(let convertible): line.member(key, convertible.description)
            default: line.member(key, value.description)
            }
        }
        write(line.finish())
    }

    /// One line being written: `key=value …` (logfmt) or `{"key":"value",…}` (JSON), then a newline.
    struct LineWriter {
        private(set) var bytes: [UInt8] = []
        private let json: Bool

        init(json: Bool) {
            self.json = json
            bytes.reserveCapacity(256)
            if json { bytes.append(UInt8(ascii: "{")) }
        }

        mutating func member(_ key: String, _ value: String) {
            if json {
                if bytes.count > 1 { bytes.append(UInt8(ascii: ",")) }
                quoted(key)
                bytes.append(UInt8(ascii: ":"))
                quoted(value)
            } else {
                if !bytes.isEmpty { bytes.append(UInt8(ascii: " ")) }
                bytes.append(contentsOf: key.utf8)
                bytes.append(UInt8(ascii: "="))
                if Self.needsQuotes(value) { quoted(value) } else { bytes.append(contentsOf: value.utf8) }
            }
        }

        mutating func finish() -> [UInt8] {
            if json { bytes.append(UInt8(ascii: "}")) }
            bytes.append(UInt8(ascii: "\n"))
            return bytes
        }

        private static func needsQuotes(_ value: String) -> Bool {
            value.isEmpty
                || value.utf8.contains { $0 <= 0x20 || $0 == UInt8(ascii: "=") || $0 == UInt8(ascii: "\"") || $0 == 0x7F }
        }

        /// `"value"`, escaping quotes, backslashes and control characters the way JSON does (and
        /// logfmt readers accept).
        private mutating func quoted(_ value: String) {
            bytes.append(UInt8(ascii: "\""))
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case UInt8(ascii: "\n"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case UInt8(ascii: "\r"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case UInt8(ascii: "\t"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                case 0..<0x20, 0x7F:
                    let digits = Array("0123456789abcdef".utf8)
                    bytes.append(contentsOf: Array("\\u00".utf8))
                    bytes.append(digits[Int(byte >> 4)])
                    bytes.append(digits[Int(byte & 0xF)])
                default: bytes.append(byte)
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
    }

    /// Writes `line` to descriptor 2 in one call.
    public static let writeToStderr: @Sendable ([UInt8]) -> Void = { line in
        line.withUnsafeBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// `2026-11-29T19:02:17.123Z`; the part up to the seconds is formatted once per second, per
    /// thread: a cache shared by the event loops was a lock they took turns at for every line.
    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let cache = SecondCache.current
        if cache.second != now.tv_sec {
            var time = tm()
            var epoch = now.tv_sec
            gmtime_r(&epoch, &time)
            var buffer = [CChar](repeating: 0, count: 32)
            let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S.", &time)
            cache.second = now.tv_sec
            cache.text = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        let milliseconds = Int(now.tv_nsec / 1_000_000)
        let digits = [UInt8(48 + milliseconds / 100), UInt8(48 + milliseconds / 10 % 10), UInt8(48 + milliseconds % 10), 90]
        return cache.text + String(decoding: digits, as: UTF8.self)
    }

    /// The formatted second of the calling thread's last line.
    private final class SecondCache {
        var second = -1
        var text = ""

        private static let key: pthread_key_t = {
            var key = pthread_key_t()
            pthread_key_create(&key) { stored in
                if let stored { Unmanaged<SecondCache>.fromOpaque(stored).release() }
            }
            return key
        }()

        static var current: SecondCache {
            if let stored = pthread_getspecific(key) { return Unmanaged<SecondCache>.fromOpaque(stored).takeUnretainedValue() }
            let cache = SecondCache()
            pthread_setspecific(key, Unmanaged.passRetained(cache).toOpaque())
            return cache
        }
    }
}
