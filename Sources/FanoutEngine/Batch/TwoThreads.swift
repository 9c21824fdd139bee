import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

/// Runs two pieces of work at once, one on the calling thread and one on another, and returns
/// when both are done: for the halves of a large batch's decoding, running and answer, which
/// are pure computation (no waiting), so the calling thread, an event loop or a job runner, is
/// only held for as long as it would have been busy anyway. Dispatch wakes its other thread in
/// some 20 to 40 µs here, which is why only large batches are split.
enum TwoThreads {
    /// Whether the machine has a second core to run the other half on.
    static let areAvailable = sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1

    /// Runs `first` and `second` at once (Dispatch's worker threads take the one this thread
    /// does not), returning when both have returned.
    ///
    /// The two must not touch the same mutable state: each half writes only its own variables.
    static func run(_ first: () -> Void, and second: () -> Void) {
        withoutActuallyEscaping(first) { first in
            withoutActuallyEscaping(second) { second in
                let parts = Parts(first: first, second: second)
                DispatchQueue.concurrentPerform(iterations: 2) { part in
                    if part == 0 { parts.first() } else { parts.second() }
                }
            }
        }
    }

    /// The two closures, handed to Dispatch's threads: they do not outlive `run`, which returns
    /// only once both are done, and each touches state the other does not.
    private struct Parts: @unchecked Sendable {
        let first: () -> Void
        let second: () -> Void
    }
}
