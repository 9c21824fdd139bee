import CLinux
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// A thread of our own that waits in its own epoll instance and runs Swift jobs.
///
/// It is the `TaskExecutor` of the requests it reads: their handler tasks run here, between
/// socket events, so a request is read, handled and answered on one thread without hand-offs,
/// and the loop's connection table needs no lock. Blocking libfcgi calls are allowed here: this
/// is not Swift's cooperative pool.
final class EventLoop: TaskExecutor, @unchecked Sendable {
    // @unchecked: `pending` is guarded by its mutex; `thread` is touched only by `start` and
    // `stop`, which the server calls one after the other; everything else only on the loop's own
    // thread (`onEvent` and queued work both run there).

    private enum Work: Sendable {
        case job(UnownedJob)
        case closure(@Sendable () -> Void)
    }

    private struct Pending {
        var work: [Work] = []
        /// True while the thread waits in epoll with nothing queued: submitters must wake it.
        var sleeping = false
        var stopped = false
    }

    let epoll: Epoll
    // A pthread mutex (NIO's box), not `Synchronization.Mutex`: on Linux `Mutex` hands a
    // contended lock over inside the kernel (a priority-inheritance futex), which ThreadSanitizer
    // cannot see, so every meeting at the lock was reported as a race. The same holds for every
    // lock in Fanout.
    private let pending = NIOLockedValueBox(Pending())
    private var thread: pthread_t?

    /// Handles one epoll event (token, event bits); set once, before the thread starts.
    private var onEvent: (UInt64, UInt32) -> Void = { _, _ in }
    /// Runs before each wait with nothing queued, and says how long that wait may last at most;
    /// set once, before the thread starts.
    private var whenIdle: () -> Duration? = { nil }

    init() throws(FastCGIServerError) {
        epoll = try Epoll()
    }

    /// Starts the thread; `onEvent` handles each socket event on it, `whenIdle` runs on it before
    /// each wait that may block and bounds that wait (`nil`: none).
    func start(name: String, whenIdle: @escaping () -> Duration? = { nil }, onEvent: @escaping (UInt64, UInt32) -> Void) {
        self.onEvent = onEvent
        self.whenIdle = whenIdle
        thread = Self.spawn(name: name) { [unowned self] in run() }
    }

    /// Whether the caller is running on this loop's thread.
    ///
    /// Asked from any thread, so it reads nothing shared: each loop thread marks itself in
    /// thread-local storage when it starts (comparing with `thread`, which `stop` writes, was a
    /// data race).
    var isCurrent: Bool {
        pthread_getspecific(Self.currentLoopKey) == Unmanaged.passUnretained(self).toOpaque()
    }

    /// The thread-local slot where a loop thread keeps its loop.
    private static let currentLoopKey: pthread_key_t = {
        var key = pthread_key_t()
        let result = pthread_key_create(&key, nil)
        precondition(result == 0, "pthread_key_create failed: \(result)")
        return key
    }()

    func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    /// Runs `body` on the loop thread, after the work already queued.
    func execute(_ body: @escaping @Sendable () -> Void) {
        submit(.closure(body))
    }

    private func submit(_ work: Work) {
        let wake = pending.withLockedValue { pending in
            pending.work.append(work)
            defer { pending.sleeping = false }
            return pending.sleeping
        }
        // From the loop's own thread (a request's task starting, or resuming on its loop) there is
        // no one to wake: the loop runs queued work before it waits again. Skipping the eventfd
        // write and read saves two system calls and an epoll round per request.
        if wake, !isCurrent { epoll.wake() }
    }

    /// Runs the work already queued, then stops and joins the thread.
    func stop() {
        pending.withLockedValue { $0.stopped = true }
        epoll.wake()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    private func run() {
        pthread_setspecific(Self.currentLoopKey, Unmanaged.passUnretained(self).toOpaque())
        defer { pthread_setspecific(Self.currentLoopKey, nil) }
        let events = UnsafeMutableBufferPointer<epoll_event>.allocate(capacity: 64)
        defer { events.deallocate() }
        var batch: [Work] = []
        while true {
            let stopped = pending.withLockedValue { pending -> Bool in
                swap(&batch, &pending.work)
                pending.sleeping = batch.isEmpty
                return pending.stopped
            }
            if stopped, batch.isEmpty { return }
            let ranWork = !batch.isEmpty
            run(&batch)
            // Do not sleep while work may have been queued by what just ran.
            let timeout = ranWork ? 0 : Self.milliseconds(whenIdle())
            let count = epoll.wait(into: events, timeoutMilliseconds: timeout)
            for index in 0..<count {
                let token = events[index].data.u64
                if token == Epoll.wakeToken {
                    epoll.drainWake()
                    continue
                }
                onEvent(token, events[index].events)
                // What the event started (a request's handler) runs before the next event is
                // looked at: a request is answered before the next one is read, rather than
                // after every request of the wake-up has been read, which made the first ones
                // wait for the last.
                pending.withLockedValue { pending in
                    if !pending.work.isEmpty { swap(&batch, &pending.work) }
                }
                run(&batch)
            }
        }
    }

    /// An epoll timeout: `nil` waits for ever (-1); anything else at least 1 ms, rounded up.
    static func milliseconds(_ duration: Duration?) -> Int32 {
        guard let duration else { return -1 }
        let (seconds, attoseconds) = duration.components
        guard seconds < Int64(Int32.max / 1000) else { return Int32.max }
        return Int32(max(seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000, 1))
    }

    /// Runs and empties `batch`.
    private func run(_ batch: inout [Work]) {
        for work in batch {
            switch work {
            case .job(let job): job.runSynchronously(on: asUnownedTaskExecutor())
            case .closure(let body): body()
            }
        }
        batch.removeAll(keepingCapacity: true)
    }

    /// Starts a named POSIX thread running `body`.
    /// Runs `body` on a new thread that nobody joins.
    static func detach(name: String, _ body: @escaping @Sendable () -> Void) {
        pthread_detach(spawn(name: name, body))
    }

    private static func spawn(name: String, _ body: @escaping () -> Void) -> pthread_t {
        final class Box {
            let body: () -> Void
            init(_ body: @escaping () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { context in
                let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
                box.body()
                return nil
            }, context)
        precondition(result == 0, "pthread_create failed: \(result)")
        _ = pthread_setname_np(thread, String(name.prefix(15)))
        return thread
    }
}
