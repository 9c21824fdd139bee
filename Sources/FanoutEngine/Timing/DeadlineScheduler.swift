import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Suspends tasks until deadlines, or calls actions at them, from one thread holding every pending
/// deadline in a heap.
///
/// The engine sleeps a lot: every batch waits for its deadline, tasks for their timeouts, and
/// `sleep` for its input. `Task.sleep` arms a Dispatch timer per call, and a cancelled sleep
/// leaves its timer queued until the original deadline: with a 60 s batch deadline and hundreds
/// of batches a second, tens of thousands of dead timers pile up, costing memory and heap
/// maintenance. Here a cancelled sleep is dropped at once, and arming one is a heap insertion.
public final class DeadlineScheduler: @unchecked Sendable {
    // @unchecked: all mutable state is guarded by `mutex`; `condition` pairs with it.

    /// The scheduler the engine uses.
    public static let shared = DeadlineScheduler()

    /// What happens at a deadline.
    private enum Waiter {
        /// A suspended `sleep` resumes.
        case task(CheckedContinuation<Void, any Error>)
        /// A `schedule`d action runs, on the timer thread.
        case action(@Sendable () -> Void)

        func fire() {
            switch self {
            case .task(let continuation): continuation.resume()
            case .action(let action): action()
            }
        }
    }

    /// A pending action, to cancel it with ``cancel(_:)``.
    public struct Timer: Sendable {
        fileprivate let id: UInt64
    }

    private struct Pending {
        let deadline: ContinuousClock.Instant
        let id: UInt64
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// A min-heap by deadline; entries whose id is no longer in `waiters` are dead.
    private var heap: [Pending] = []
    private var waiters: [UInt64: Waiter] = [:]
    /// Sleeps cancelled before they registered.
    private var cancelledEarly: Set<UInt64> = []
    private var nextId: UInt64 = 0
    private var threadStarted = false

    private init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    /// Suspends until `deadline`.
    ///
    /// - Throws: `CancellationError` as soon as the calling task is cancelled.
    public func sleep(until deadline: ContinuousClock.Instant) async throws {
        let id = locked {
            nextId += 1
            return nextId
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let cancelled = locked { () -> Bool in
                    if cancelledEarly.remove(id) != nil { return true }
                    insert(.task(continuation), id: id, deadline: deadline)
                    return false
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let waiter = locked { () -> Waiter? in
                if let waiter = waiters.removeValue(forKey: id) {
                    compactIfMostlyDead()
                    return waiter
                }
                cancelledEarly.insert(id)
                return nil
            }
            if case .task(let continuation) = waiter { continuation.resume(throwing: CancellationError()) }
        }
    }

    /// Suspends for `duration`.
    public func sleep(for duration: Duration) async throws {
        try await sleep(until: .now + duration)
    }

    /// Calls `action` on the timer thread at `deadline`, unless cancelled first.
    ///
    /// This is what waiting costs without a task: no task to create and resume, which matters to
    /// a batch of a hundred sleeps. `action` must be quick, as every other deadline waits for it.
    public func schedule(at deadline: ContinuousClock.Instant, _ action: @escaping @Sendable () -> Void) -> Timer {
        locked {
            nextId += 1
            insert(.action(action), id: nextId, deadline: deadline)
            return Timer(id: nextId)
        }
    }

    /// Drops `timer`'s action if it is still pending. An action already due may still run once.
    public func cancel(_ timer: Timer) {
        locked {
            if waiters.removeValue(forKey: timer.id) != nil { compactIfMostlyDead() }
        }
    }

    // MARK: The timer thread

    private func startThread() {
        var thread = pthread_t()
        let context = Unmanaged.passUnretained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { context in
                Unmanaged<DeadlineScheduler>.fromOpaque(context!).takeUnretainedValue().run()
                return nil
            }, context)
        precondition(result == 0, "pthread_create failed: \(result)")
        pthread_detach(thread)
    }

    private func run() {
        pthread_mutex_lock(mutex)
        while true {
            while let top = heap.first, waiters[top.id] == nil { pop() }
            guard let top = heap.first else {
                pthread_cond_wait(condition, mutex)
                continue
            }
            let now = ContinuousClock.now
            if top.deadline > now {
                var wake = timespec()
                clock_gettime(CLOCK_MONOTONIC, &wake)
                let (seconds, attoseconds) = (top.deadline - now).components
                let nanoseconds = Int(wake.tv_nsec) + Int(attoseconds / 1_000_000_000)
                wake.tv_sec += Int(seconds) + nanoseconds / 1_000_000_000
                wake.tv_nsec = nanoseconds % 1_000_000_000
                pthread_cond_timedwait(condition, mutex, &wake)
                continue
            }
            var due: [Waiter] = []
            while let first = heap.first, first.deadline <= now {
                pop()
                if let waiter = waiters.removeValue(forKey: first.id) { due.append(waiter) }
            }
            pthread_mutex_unlock(mutex)
            for waiter in due { waiter.fire() }
            pthread_mutex_lock(mutex)
        }
    }

    // MARK: Heap, under the mutex

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    private func insert(_ waiter: Waiter, id: UInt64, deadline: ContinuousClock.Instant) {
        waiters[id] = waiter
        push(Pending(deadline: deadline, id: id))
        if !threadStarted {
            threadStarted = true
            startThread()
        }
        if heap[0].id == id { pthread_cond_signal(condition) }  // a new earliest deadline
    }

    // The sifts move a hole instead of swapping, over the raw buffer: with thousands of pending
    // sleeps (a few dozen batches of a hundred) the timer thread spent most of its time in
    // `swapAt` and its bounds and uniqueness checks.

    private func push(_ entry: Pending) {
        heap.append(entry)
        heap.withUnsafeMutableBufferPointer { heap in
            var hole = heap.count - 1
            while hole > 0 {
                let parent = (hole - 1) / 2
                guard entry.deadline < heap[parent].deadline else { break }
                heap[hole] = heap[parent]
                hole = parent
            }
            heap[hole] = entry
        }
    }

    private func pop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(0)
    }

    private func siftDown(_ start: Int) {
        heap.withUnsafeMutableBufferPointer { heap in
            let entry = heap[start]
            var hole = start
            while true {
                var child = 2 * hole + 1
                guard child < heap.count else { break }
                if child + 1 < heap.count, heap[child + 1].deadline < heap[child].deadline { child += 1 }
                guard heap[child].deadline < entry.deadline else { break }
                heap[hole] = heap[child]
                hole = child
            }
            heap[hole] = entry
        }
    }

    /// Cancelled sleeps leave dead heap entries; rebuild once they outnumber the live ones, so the
    /// heap stays proportional to what is really pending.
    private func compactIfMostlyDead() {
        guard heap.count > 1024, heap.count > 2 * waiters.count else { return }
        heap.removeAll { waiters[$0.id] == nil }
        for index in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
    }
}
