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
        let (seconds, attoseconds) = duration.components
        let (nanoseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return .max }
        let (sum, overflowed) = start.addingReportingOverflow(nanoseconds + attoseconds / 1_000_000_000)
        return overflowed ? .max : sum
    }
}
