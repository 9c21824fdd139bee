import FanoutHTTP
import Testing

@Suite("Retry policy")
struct RetryPolicyTests {
    let policy = RetryPolicy(maximumAttempts: 3)
    /// The largest possible wait: makes the jitter visible as its bound.
    static func largest(_ bound: Duration) -> Duration { bound }

    @Test(
        "which failures are retried, for which methods",
        arguments: [
            (RetryPolicy.Failure.connectFailed, "POST", false, true),
            (.connectFailed, "GET", false, true),
            (.status(503, retryAfter: nil), "GET", false, true),
            (.status(503, retryAfter: nil), "POST", false, false),
            (.status(503, retryAfter: nil), "POST", true, true),
            (.status(503, retryAfter: nil), "PATCH", false, false),
            (.status(429, retryAfter: nil), "PUT", false, true),
            (.status(408, retryAfter: nil), "DELETE", false, true),
            (.status(502, retryAfter: nil), "OPTIONS", false, true),
            (.status(504, retryAfter: nil), "HEAD", false, true),
            (.status(500, retryAfter: nil), "GET", false, false),
            (.status(404, retryAfter: nil), "GET", false, false),
            (.disconnected, "GET", false, true),
            (.disconnected, "POST", false, false),
            (.timedOut, "GET", false, false),
            (.tooLarge, "GET", false, false),
        ] as [(RetryPolicy.Failure, String, Bool, Bool)])
    func retries(failure: RetryPolicy.Failure, method: String, keyed: Bool, retried: Bool) {
        let decision = policy.decide(
            after: failure, attempt: 1, method: method, hasIdempotencyKey: keyed, timeLeft: nil, random: Self.largest)
        #expect((decision != .giveUp) == retried)
    }

    @Test("no attempt past the maximum")
    func stopsAtMaximum() {
        #expect(
            policy.decide(after: .connectFailed, attempt: 2, method: "GET", hasIdempotencyKey: false, timeLeft: nil, random: Self.largest)
                != .giveUp)
        #expect(
            policy.decide(after: .connectFailed, attempt: 3, method: "GET", hasIdempotencyKey: false, timeLeft: nil, random: Self.largest)
                == .giveUp)
    }

    @Test("full jitter: a random wait up to 100 ms × 2^(attempt−1), at most 2 s")
    func backoffBounds() {
        let policy = RetryPolicy(maximumAttempts: 10)
        let bounds = (1...7).map { attempt in
            policy.decide(after: .connectFailed, attempt: attempt, method: "GET", hasIdempotencyKey: false, timeLeft: nil, random: Self.largest)
        }
        #expect(
            bounds == [100, 200, 400, 800, 1600, 2000, 2000].map { RetryPolicy.Decision.retry(after: .milliseconds($0)) })
        let none = policy.decide(
            after: .connectFailed, attempt: 3, method: "GET", hasIdempotencyKey: false, timeLeft: nil, random: { _ in .zero })
        #expect(none == .retry(after: .zero))
        for _ in 0..<100 {
            let wait = RetryPolicy.systemRandom(.milliseconds(400))
            #expect(wait >= .zero && wait <= .milliseconds(400))
        }
    }

    @Test("Retry-After is honoured, and past the deadline the call gives up at once")
    func retryAfter() {
        let wait = policy.decide(
            after: .status(503, retryAfter: .seconds(3)), attempt: 1, method: "GET", hasIdempotencyKey: false,
            timeLeft: .seconds(10), random: Self.largest)
        #expect(wait == .retry(after: .seconds(3)))
        let tooLate = policy.decide(
            after: .status(503, retryAfter: .seconds(30)), attempt: 1, method: "GET", hasIdempotencyKey: false,
            timeLeft: .seconds(10), random: Self.largest)
        #expect(tooLate == .giveUp)
        let backoffTooLate = policy.decide(
            after: .connectFailed, attempt: 1, method: "GET", hasIdempotencyKey: false, timeLeft: .milliseconds(50),
            random: Self.largest)
        #expect(backoffTooLate == .giveUp)
    }

    /// 1994-11-06 08:49:37 GMT, the RFC's own example, in seconds since 1970.
    static let example: Double = 784_111_777

    @Test(
        "Retry-After in seconds and in every HTTP date form",
        arguments: [
            ("120", 0.0, Duration?.some(.seconds(120))),
            (" 5 ", 0, .some(.seconds(5))),
            ("Sun, 06 Nov 1994 08:49:37 GMT", example - 10, .some(.seconds(10))),
            ("Sunday, 06-Nov-94 08:49:37 GMT", example - 10, .some(.seconds(10))),
            ("Sun Nov  6 08:49:37 1994", example - 10, .some(.seconds(10))),
            ("Sun, 06 Nov 1994 08:49:37 GMT", example + 100, .some(.zero)),
            ("soon", 0, nil),
            ("-5", 0, nil),
            ("Sun, 32 Nov 1994 08:49:37 GMT", 0, nil),
            // Found by fuzz-http-rules: years that overflowed the date arithmetic and trapped.
            ("Sun, 06 Nov 9999999999 08:49:37 GMT", 0, nil),
            ("Sun, 06 Nov 999999999 08:49:37 GMT", 0, nil),
        ] as [(String, Double, Duration?)])
    func parsesRetryAfter(value: String, now: Double, expected: Duration?) {
        #expect(RetryPolicy.retryAfter(value, now: now) == expected)
    }
}
