#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The monotonic clock read as whole nanoseconds, for timing instant tasks.
///
/// `ContinuousClock.Instant` is compared and subtracted here through its generic protocol
/// witnesses (it is not inlined across the standard library's boundary): three such calls per
/// task were a sixth of running a batch of echoes. A plain integer costs one instruction.
enum Ticks {
    /// Nanoseconds since an arbitrary point (the system's boot), never going backwards.
    @inline(__always)
    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    /// The reading `duration` after `start`, saturating far in the future.
    static func after(_ start: Int64, _ duration: Duration) -> Int64 {
        let (sum, overflowed) = start.addingReportingOverflow(duration.wholeNanoseconds)
        return overflowed ? .max : sum
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating past 292 years: task durations are kept and
    /// compared as these, since `Duration`'s own arithmetic is 128-bit and not inlined.
    public var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (nanoseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        let (sum, overflowed) = nanoseconds.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflowed ? (seconds < 0 ? .min : .max) : sum
    }
}
