import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Suspends tasks until deadlines, from one thread holding every pending deadline in a heap.
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

    private struct Pending {
        let deadline: ContinuousClock.Instant
        let id: UInt64
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// A min-heap by deadline; entries whose id is no longer in `waiters` are dead.
    private var heap: [Pending] = []
    private var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
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
                    waiters[id] = continuation
                    push(Pending(deadline: deadline, id: id))
                    if !threadStarted {
                        threadStarted = true
                        startThread()
                    }
                    if heap[0].id == id { pthread_cond_signal(condition) }  // a new earliest deadline
                    return false
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let continuation = locked { () -> CheckedContinuation<Void, any Error>? in
                if let continuation = waiters.removeValue(forKey: id) {
                    compactIfMostlyDead()
                    return continuation
                }
                cancelledEarly.insert(id)
                return nil
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    /// Suspends for `duration`.
    public func sleep(for duration: Duration) async throws {
        try await sleep(until: .now + duration)
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
            var due: [CheckedContinuation<Void, any Error>] = []
            while let first = heap.first, first.deadline <= now {
                pop()
                if let continuation = waiters.removeValue(forKey: first.id) { due.append(continuation) }
            }
            pthread_mutex_unlock(mutex)
            for continuation in due { continuation.resume() }
            pthread_mutex_lock(mutex)
        }
    }

    // MARK: Heap, under the mutex

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    private func push(_ entry: Pending) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private func pop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(0)
    }

    private func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, heap[left].deadline < heap[smallest].deadline { smallest = left }
            if right < heap.count, heap[right].deadline < heap[smallest].deadline { smallest = right }
            if smallest == parent { return }
            heap.swapAt(parent, smallest)
            parent = smallest
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
