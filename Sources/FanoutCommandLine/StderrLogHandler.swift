import FanoutEngine
import FanoutService
import Logging
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Writes log lines to stderr, as logfmt or as JSON, each line whole in one `write(2)`.
///
/// logfmt: `time=2026-11-29T19:02:17.123Z level=info msg=request key=value …`, a value quoted
/// (with `\"`, `\\`, `\n` escapes) when it is empty or holds a space, `=`, a quote or a control
/// character. JSON: one object per line with the same members, every value a string.
///
/// swift-log's `StreamLogHandler` formats the local time with `strftime` and takes a lock around
/// `fwrite` and `fflush` for every line; with a line per request that was about 15% of the
/// responder's time on small requests. One `write` of a line under 4 KiB is atomic on a pipe,
/// so lines from different threads never interleave and no lock is needed.
///
/// On an event loop, `info` and `debug` lines (a line per request) gather in the thread's buffer
/// and go out together when the next line would take them past 4 KiB (64 KiB when stderr is a
/// regular file), or once the loop runs out of work with lines ``idleFlushDelay`` old (see
/// ``flushThreadBuffer()``): a `write` per request was one of the five system calls a small
/// request made, and a `write` each time a busy loop ran out of work was still one for every three
/// requests. 4 KiB is what a pipe writes whole, so lines from two loops still never interleave.
/// Lines above `info` go at once, after what the thread had gathered, so order holds.
public struct StderrLogHandler: LogHandler {
    /// How lines are written.
    public enum Format: String, Sendable {
        case logfmt, json
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let format: Format
    /// Where lines go when not to stderr (tests).
    private let write: (@Sendable ([UInt8]) -> Void)?

    /// Creates a handler.
    ///
    /// - Parameter write: where lines go, one call per line; stderr, buffered on event loops, when
    ///   omitted (tests capture them).
    public init(
        label: String, level: Logger.Level, format: Format = .logfmt,
        write: (@Sendable ([UInt8]) -> Void)? = nil
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
        Self.timestamp(into: &line)
        line.member("level", event.level.rawValue)
        line.member("msg", event.message.description)
        if label != "fanout" { line.member("logger", label) }
        // In the order the dictionary holds them: the same for the same keys, and sorting them
        // was a tenth of the line's cost.
        line.members(merged)
        emit(&line, urgent: event.level > .info)
    }

    /// Writes a request's line as ``log(event:)`` writes `logger.info("request", metadata:)`
    /// with ``RequestLogRecord/metadata``, its members in that order, from the record's fields:
    /// for `FanoutService.Configuration.requestLog`. Building and reading a dictionary for every
    /// request was most of the line's cost.
    public func logRequest(_ record: RequestLogRecord) {
        guard logLevel <= .info else { return }
        var line = LineWriter(json: format == .json)
        Self.timestamp(into: &line)
        line.member("level", "info")
        line.member("msg", "request")
        if label != "fanout" { line.member("logger", label) }
        line.member("method", record.method)
        line.member("path", record.path)
        line.member("status", integer: record.status)
        line.member("tasks", integer: record.tasks)
        line.member("duration_ms", number: { $0.milliseconds(record.duration) })
        line.member("request_id", record.requestID)
        if record.streamed { line.member("streamed", "true") }
        line.members(metadata)
        emit(&line, urgent: false)
    }

    private func emit(_ line: inout LineWriter, urgent: Bool) {
        if let write {
            write(line.finish())
        } else {
            ThreadState.current.emit(line.finish(), urgent: urgent)
        }
    }

    /// How long gathered lines wait at most once their thread is idle.
    public static let idleFlushDelay = Duration.milliseconds(50)

    /// Writes the calling thread's gathered lines once the oldest has waited ``idleFlushDelay``,
    /// and from then on lets its `info` and `debug` lines gather. Returns how soon to call again
    /// for the lines still waiting, `nil` when none are.
    ///
    /// For threads that call it every time they run out of work and then wait no longer than it
    /// says: the FastCGI event loops (see `FastCGIServer.Configuration.whenIdle`). Other threads
    /// write every line at once. A thread's remaining lines are written when it exits.
    public static func flushThreadBuffer() -> Duration? {
        let state = ThreadState.current
        state.buffers = true
        guard !state.pending.isEmpty else { return nil }
        let waited = Duration.nanoseconds(monotonicNanoseconds() - state.pendingSince)
        guard waited < idleFlushDelay else {
            state.flush()
            return nil
        }
        return idleFlushDelay - waited
    }

    private static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
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

        /// A member whose value needs no quotes or escapes (a timestamp).
        mutating func plainMember(_ key: String, _ value: UnsafeRawBufferPointer) {
            if json {
                if bytes.count > 1 { bytes.append(UInt8(ascii: ",")) }
                quoted(key)
                bytes.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: "\"")])
                bytes.append(contentsOf: value)
                bytes.append(UInt8(ascii: "\""))
            } else {
                if !bytes.isEmpty { bytes.append(UInt8(ascii: " ")) }
                bytes.append(contentsOf: key.utf8)
                bytes.append(UInt8(ascii: "="))
                bytes.append(contentsOf: value)
            }
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

        mutating func member(_ key: String, integer value: Int) {
            member(key, number: { $0.integer(value) })
        }

        /// A member whose value `body` writes as a number (at most ``ByteCursor/numberBound`` bytes).
        mutating func member(_ key: String, number body: (inout ByteCursor) -> Void) {
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: ByteCursor.numberBound + 4) { buffer in
                var cursor = ByteCursor(buffer)
                body(&cursor)
                plainMember(key, UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buffer[..<cursor.count])))
            }
        }

        mutating func members(_ metadata: Logger.Metadata) {
            for (key, value) in metadata {
                switch value {
                case .string(let text): member(key, text)
                case .stringConvertible(let convertible): member(key, convertible.description)
                default: member(key, value.description)
                }
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

    /// Writes `bytes` to descriptor 2, whole: a `write` to a pipe or file may take part of them.
    private static func writeToStderr(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return }  // stderr closed: nothing else to do with the line
                offset += written
            }
        }
    }

    /// `2026-11-29T19:02:17.123Z`; the part up to the seconds is formatted once per second, per
    /// thread: a cache shared by the event loops was a lock they took turns at for every line.
    private static func timestamp(into line: inout LineWriter) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let cache = ThreadState.current
        if cache.second != now.tv_sec {
            var time = tm()
            var epoch = now.tv_sec
            gmtime_r(&epoch, &time)
            var buffer = [CChar](repeating: 0, count: 32)
            let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S.", &time)
            cache.second = now.tv_sec
            cache.stamp = buffer[..<length].map { UInt8(bitPattern: $0) } + Array("000Z".utf8)
        }
        // The milliseconds, written over the last line's in place.
        let milliseconds = Int(now.tv_nsec / 1_000_000)
        let end = cache.stamp.count - 1
        cache.stamp[end - 3] = UInt8(48 + milliseconds / 100)
        cache.stamp[end - 2] = UInt8(48 + milliseconds / 10 % 10)
        cache.stamp[end - 1] = UInt8(48 + milliseconds % 10)
        cache.stamp.withUnsafeBytes { line.plainMember("time", $0) }
    }

    /// What a thread keeps for its lines: the formatted second of its last line, and on an event
    /// loop the lines it has gathered. Only its own thread touches it, so it needs no lock.
    private final class ThreadState {
        var second = -1
        /// `2026-11-29T19:02:17.123Z`, up to the second for `second`.
        var stamp: [UInt8] = []
        /// Whether `info` and `debug` lines gather in `pending` (set by `flushThreadBuffer`).
        var buffers = false
        var pending: [UInt8] = []
        /// When the first of `pending`'s lines was gathered (CLOCK_MONOTONIC, nanoseconds).
        var pendingSince: Int64 = 0

        /// The most gathered in one write. To a pipe or socket (journald), PIPE_BUF: what a pipe
        /// writes whole, never interleaved with another thread's write. To a regular file, 64 KiB:
        /// Linux writes to a file one at a time (under the file's lock), and under w1 writing
        /// 4 KiB at a time to the log file was 2.3% of the responder's CPU.
        private static let limit: Int = {
            var status = stat()
            return fstat(2, &status) == 0 && status.st_mode & S_IFMT == S_IFREG ? 64 * 1024 : 4096
        }()

        func emit(_ line: [UInt8], urgent: Bool) {
            guard buffers else { return StderrLogHandler.writeToStderr(line) }
            if pending.count + line.count > Self.limit { flush() }
            if pending.isEmpty {
                pending.reserveCapacity(Self.limit)
                pendingSince = StderrLogHandler.monotonicNanoseconds()
            }
            pending.append(contentsOf: line)
            if urgent || pending.count >= Self.limit { flush() }
        }

        func flush() {
            guard !pending.isEmpty else { return }
            StderrLogHandler.writeToStderr(pending)
            pending.removeAll(keepingCapacity: true)
        }

        private static let key: pthread_key_t = {
            var key = pthread_key_t()
            // Runs on the thread as it exits (an event loop stopping at shutdown): its last lines.
            pthread_key_create(&key) { stored in
                guard let stored else { return }
                let state = Unmanaged<ThreadState>.fromOpaque(stored).takeRetainedValue()
                state.flush()
            }
            return key
        }()

        static var current: ThreadState {
            if let stored = pthread_getspecific(key) { return Unmanaged<ThreadState>.fromOpaque(stored).takeUnretainedValue() }
            let state = ThreadState()
            pthread_setspecific(key, Unmanaged.passRetained(state).toOpaque())
            return state
        }
    }
}
