/// Why a batch stopped before all of its tasks finished.
public enum CancellationCause: Sendable, Equatable {
    /// The client went away.
    case clientGone
    /// The server is shutting down.
    case shutdown

    var error: TaskError {
        switch self {
        case .clientGone: TaskError(code: "cancelled", message: "the batch was cancelled")
        case .shutdown: TaskError(code: "shutdown", message: "the server is shutting down")
        }
    }
}

/// Runs a validated batch: independent tasks concurrently, dependents once their dependencies
/// succeed, within the batch's concurrency limit and deadline.
public enum BatchRunner {
    /// Runs `batch` to completion and returns every task's result in request order.
    ///
    /// Cancelling the calling task cancels the batch: running operations are cancelled and every
    /// task not finished is reported `cancelled`.
    ///
    /// - Parameters:
    ///   - batch: the validated batch.
    ///   - cancellationCause: why the calling task was cancelled, asked only when it is.
    public static func run(
        _ batch: Batch,
        cancellationCause: @escaping @Sendable () -> CancellationCause = { .clientGone }
    ) async -> BatchResult {
        let clock = ContinuousClock()
        let start = clock.now
        var execution = BatchExecution(batch: batch, start: start, clock: clock)
        await withTaskGroup(of: BatchExecution.Event.self) { group in
            // Instant tasks check the deadline themselves as they run inline; only a batch with
            // tasks that wait needs a timer to stop them.
            if batch.hasWaitingTasks {
                let deadline = start + batch.timeout
                group.addTask {
                    do {
                        try await DeadlineScheduler.shared.sleep(until: deadline)
                        return .deadline
                    } catch {
                        return .timerCancelled
                    }
                }
            }
            await execution.launchReadyTasks(in: &group, cancellationCause: cancellationCause)
            while !execution.isFinished {
                // A stop may come from an event or from a task run inline while launching.
                if execution.stopReason != nil { group.cancelAll() }
                guard let event = await group.next() else { break }
                execution.handle(event, cancellationCause: cancellationCause)
                if execution.stopReason == nil {
                    await execution.launchReadyTasks(in: &group, cancellationCause: cancellationCause)
                }
            }
            group.cancelAll()
        }
        return execution.finish(duration: clock.now - start)
    }
}

/// The mutable state of one running batch. Lives on the task that drives the group.
struct BatchExecution {
    enum Event: Sendable {
        case finished(index: Int, outcome: TaskOutcome, duration: Duration)
        case deadline
        case timerCancelled
    }

    private let batch: Batch
    private let clock: ContinuousClock
    private let deadline: ContinuousClock.Instant
    /// One slot per task; a slot is meaningful once `isResolved` says so.
    private var results: [TaskResult]
    private var isResolved: [Bool]
    private var unresolvedDependencies: [Int]
    private var ready: [Int]
    private var readyHead = 0
    private var running = 0
    private var resolved = 0
    /// Set once the batch must stop early; every task not yet finished is cancelled with it.
    private(set) var stopReason: TaskError?

    init(batch: Batch, start: ContinuousClock.Instant, clock: ContinuousClock) {
        self.batch = batch
        self.clock = clock
        deadline = start + batch.timeout
        // Placeholders share one empty value: filling the array costs no per-task allocation.
        results = Array(
            repeating: TaskResult(id: "", status: .cancelled, duration: .zero), count: batch.tasks.count)
        isResolved = Array(repeating: false, count: batch.tasks.count)
        let counts = batch.tasks.map { $0.dependencies.count }
        unresolvedDependencies = counts
        ready = counts.indices.filter { counts[$0] == 0 }
    }

    /// True once no further event can change a result.
    var isFinished: Bool {
        resolved == results.count || (running == 0 && (stopReason != nil || readyHead == ready.count))
    }

    /// Starts ready tasks: instant ones inline, others as child tasks up to the concurrency limit.
    mutating func launchReadyTasks(
        in group: inout TaskGroup<Event>, cancellationCause: @Sendable () -> CancellationCause
    ) async {
        // Consecutive inline tasks share a clock reading: one task's end is the next one's start.
        var previousEnd: ContinuousClock.Instant?
        while stopReason == nil, readyHead < ready.count {
            let index = ready[readyHead]
            if batch.tasks[index].isInstant {
                readyHead += 1
                if Task.isCancelled {
                    stopReason = cancellationCause().error
                    return
                }
                let started = previousEnd ?? clock.now
                if started >= deadline {
                    stopReason = Self.batchTimeout(batch.timeout)
                    return
                }
                let outcome = await TaskExecutor.run(batch.tasks[index].work, timeout: nil)
                let ended = clock.now
                previousEnd = ended
                record(outcome, for: index, duration: ended - started, cancellationCause: cancellationCause)
                continue
            }
            previousEnd = nil
            guard running < batch.concurrency else { return }
            readyHead += 1
            running += 1
            let clock = clock
            // A timeout that cannot come before the batch deadline needs no timer of its own: the
            // deadline stops the task (as batch_timeout) at the same moment. By default both are
            // 60 s, so most tasks run with one timer fewer.
            let task = batch.tasks[index]
            let timeout = task.timeout < deadline - clock.now ? task.timeout : nil
            let work = task.work
            group.addTask {
                let started = clock.now
                let outcome = await TaskExecutor.run(work, timeout: timeout)
                return .finished(index: index, outcome: outcome, duration: clock.now - started)
            }
        }
    }

    mutating func handle(_ event: Event, cancellationCause: @Sendable () -> CancellationCause) {
        switch event {
        case .finished(let index, let outcome, let duration):
            running -= 1
            record(outcome, for: index, duration: duration, cancellationCause: cancellationCause)
        case .deadline:
            if stopReason == nil { stopReason = Self.batchTimeout(batch.timeout) }
        case .timerCancelled:
            break
        }
        if stopReason == nil, Task.isCancelled {
            stopReason = cancellationCause().error
        }
    }

    private mutating func record(
        _ outcome: TaskOutcome, for index: Int, duration: Duration,
        cancellationCause: @Sendable () -> CancellationCause
    ) {
        let id = batch.tasks[index].id
        switch outcome {
        case .succeeded(let output):
            resolve(index, TaskResult(id: id, status: .succeeded, output: output, duration: duration))
            for dependent in batch.dependents[index] {
                unresolvedDependencies[dependent] -= 1
                if unresolvedDependencies[dependent] == 0, !isResolved[dependent] { ready.append(dependent) }
            }
        case .failed(let error):
            resolve(index, TaskResult(id: id, status: .failed, error: error, duration: duration))
            if batch.errorPolicy == .stop, stopReason == nil {
                stopReason = TaskError(code: "stopped", message: "an earlier task failed and on_error is \"stop\"")
            }
            skipDependents(of: index)
        case .interrupted:
            // The operation saw cancellation: the batch is stopping (stopReason is set), or the
            // caller was cancelled; an operation cancelling itself stops nothing else. Dependents
            // stay unresolved and `finish` reports them cancelled for the same reason.
            if stopReason == nil, Task.isCancelled { stopReason = cancellationCause().error }
            let error = stopReason ?? TaskError(code: "cancelled", message: "the operation was cancelled")
            resolve(index, TaskResult(id: id, status: .cancelled, error: error, duration: duration))
        }
    }

    /// Marks every task that transitively depends on `index` as skipped.
    private mutating func skipDependents(of index: Int) {
        var stack = [index]
        while let failed = stack.popLast() {
            let failedId = batch.tasks[failed].id
            for dependent in batch.dependents[failed] where !isResolved[dependent] {
                let error = TaskError(
                    code: "dependency_failed", message: "dependency '\(failedId)' did not succeed")
                resolve(
                    dependent,
                    TaskResult(id: batch.tasks[dependent].id, status: .skipped, error: error, duration: .zero))
                stack.append(dependent)
            }
        }
    }

    private mutating func resolve(_ index: Int, _ result: TaskResult) {
        results[index] = result
        isResolved[index] = true
        resolved += 1
    }

    /// Reports every task that never finished as cancelled and builds the result.
    mutating func finish(duration: Duration) -> BatchResult {
        let reason = stopReason ?? TaskError(code: "cancelled", message: "the batch was cancelled")
        for index in results.indices where !isResolved[index] {
            results[index] = TaskResult(id: batch.tasks[index].id, status: .cancelled, error: reason, duration: .zero)
        }
        return BatchResult(results: results, duration: duration)
    }

    private static func batchTimeout(_ timeout: Duration) -> TaskError {
        TaskError(code: "batch_timeout", message: "the batch exceeded its \(TaskExecutor.describe(timeout)) deadline")
    }
}
