import FanoutEngine

#if canImport(Glibc)
    import Glibc
#endif

/// When a failed call to an upstream is tried again, and after how long.
///
/// Connection failures are always retried: nothing reached the upstream. 408, 429, 502, 503 and
/// 504, and a connection lost after the request was sent, are retried only when repeating the
/// call is safe: an idempotent method (GET, HEAD, PUT, DELETE, OPTIONS), or a task that sends an
/// `Idempotency-Key`. The wait is the upstream's `Retry-After` when it sent one, else a full-jitter
/// backoff (a random time up to `baseDelay` × 2^(attempt−1), at most `maximumDelay`). A wait that
/// would end past the task's deadline is not started: the call gives up at once with what the
/// upstream said.
public struct RetryPolicy: Sendable, Equatable {
    /// Attempts in all, the first included.
    public var maximumAttempts: Int
    /// The backoff before the second attempt, at most.
    public var baseDelay: Duration = .milliseconds(100)
    /// The longest backoff.
    public var maximumDelay: Duration = .seconds(2)

    /// How one attempt failed.
    public enum Failure: Sendable, Equatable {
        /// The connection could not be made: nothing was sent.
        case connectFailed
        /// The connection was lost after the request was sent.
        case disconnected
        /// The upstream answered with a status the task does not accept; `retryAfter` is its
        /// `Retry-After`, as a wait from now.
        case status(Int, retryAfter: Duration?)
        /// The attempt took longer than the upstream's timeout.
        case timedOut
        /// The response was larger than allowed.
        case tooLarge

        /// The `status` label of an attempt that failed this way without a response.
        var metricLabel: String {
            switch self {
            case .connectFailed: "connect_failed"
            case .disconnected: "disconnected"
            case .status(let status, _): String(status)
            case .timedOut: "timeout"
            case .tooLarge: "too_large"
            }
        }
    }

    /// What to do after a failed attempt.
    public enum Decision: Sendable, Equatable {
        /// Try again after this wait.
        case retry(after: Duration)
        /// Report the failure.
        case giveUp
    }

    /// Statuses that say "try again later".
    public static let retriedStatuses: Set<Int> = [408, 429, 502, 503, 504]
    /// Methods that may be repeated without changing the outcome (RFC 9110 §9.2.2).
    public static let idempotentMethods: Set<String> = ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]

    /// A policy of `maximumAttempts` attempts.
    public init(maximumAttempts: Int) {
        self.maximumAttempts = maximumAttempts
    }

    /// Decides what follows the failed attempt number `attempt` (1 for the first).
    ///
    /// - Parameters:
    ///   - timeLeft: the time until the task's deadline, or `nil` for none.
    ///   - random: returns a uniformly random duration from zero up to its argument.
    public func decide(
        after failure: Failure, attempt: Int, method: String, hasIdempotencyKey: Bool, timeLeft: Duration?,
        random: (Duration) -> Duration
    ) -> Decision {
        guard attempt < maximumAttempts else { return .giveUp }
        let repeatable = Self.idempotentMethods.contains(method) || hasIdempotencyKey
        let wait: Duration
        switch failure {
        case .connectFailed:
            wait = backoff(attempt: attempt, random: random)
        case .disconnected where repeatable:
            wait = backoff(attempt: attempt, random: random)
        case .status(let status, let retryAfter) where repeatable && Self.retriedStatuses.contains(status):
            wait = retryAfter ?? backoff(attempt: attempt, random: random)
        default:
            return .giveUp
        }
        if let timeLeft, wait >= timeLeft { return .giveUp }
        return .retry(after: wait)
    }

    /// Full jitter: a random wait up to the exponential bound.
    func backoff(attempt: Int, random: (Duration) -> Duration) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let bound = min(maximumDelay, baseDelay * (1 << exponent))
        return random(bound)
    }

    /// A uniformly random duration from zero to `bound`, from the system's generator.
    public static func systemRandom(_ bound: Duration) -> Duration {
        let nanoseconds = bound.components.seconds * 1_000_000_000 + bound.components.attoseconds / 1_000_000_000
        guard nanoseconds > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...nanoseconds))
    }

    /// The wait a `Retry-After` value asks for: delay-seconds, or an HTTP date (IMF-fixdate, or the
    /// obsolete RFC 850 and asctime forms) relative to `now` (seconds since 1970). A date in the
    /// past is no wait; anything unreadable is `nil`.
    public static func retryAfter(_ value: String, now: Double) -> Duration? {
        let text = value.trimmingSpaces()
        if !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            guard let seconds = Int64(text) else { return .seconds(Int64.max / 2_000_000_000) }
            return .seconds(seconds)
        }
        guard let date = httpDate(text) else { return nil }
        let seconds = date - now
        return seconds > 0 ? .milliseconds(Int64((seconds * 1000).rounded(.up))) : .zero
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Seconds since 1970 of an HTTP date (RFC 9110 §5.6.7), always in GMT.
    static func httpDate(_ text: String) -> Double? {
        // Words and numbers, separators dropped: "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate),
        // "Sunday, 06-Nov-94 08:49:37 GMT" (RFC 850), "Sun Nov  6 08:49:37 1994" (asctime).
        let parts = text.split { $0 == " " || $0 == "," || $0 == "-" }.map(String.init)
        var day: Int?
        var month: Int?
        var year: Int?
        var clock: [Int]?
        for part in parts.dropFirst() {
            if part.contains(":") {
                let fields = part.split(separator: ":").compactMap { Int($0) }
                guard fields.count == 3 else { return nil }
                clock = fields
            } else if let index = months.firstIndex(of: part.lowercased()) {
                month = index
            } else if let number = Int(part) {
                if day == nil, part.count <= 2 {
                    day = number
                } else {
                    year = part.count == 2 ? (number < 70 ? 2000 + number : 1900 + number) : number
                }
            } else if part.uppercased() != "GMT" {
                return nil
            }
        }
        // A four-digit year at most: a larger one would overflow `tm_year` (found by fuzz-http-rules).
        guard let day, let month, let year, let clock, (1...31).contains(day), (0...9999).contains(year),
            clock[0] < 24, clock[1] < 60, clock[2] < 61
        else { return nil }
        var time = tm()
        time.tm_year = Int32(year - 1900)
        time.tm_mon = Int32(month)
        time.tm_mday = Int32(day)
        time.tm_hour = Int32(clock[0])
        time.tm_min = Int32(clock[1])
        time.tm_sec = Int32(clock[2])
        return Double(timegm(&time))
    }
}
