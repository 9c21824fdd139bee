import NIOConcurrencyHelpers

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
    ///   - onResults: when given, receives every task's result as soon as it is final, in
    ///     completion order (results that become final together arrive together); every task is
    ///     reported exactly once before `run` returns.
    public static func run(
        _ batch: Batch,
        cancellationCause: @escaping @Sendable () -> CancellationCause = { .clientGone },
        onResults: (([TaskResult]) async -> Void)? = nil
    ) async -> BatchResult {
        let clock = ContinuousClock()
        let start = clock.now
        let inbox = BatchInbox()
        var execution = BatchExecution(
            batch: batch, start: start, clock: clock, inbox: inbox, reportsResults: onResults != nil)
        // Instant tasks check the deadline themselves as they run inline; only a batch with
        // tasks that wait needs a timer to stop them.
        let deadlineTimer =
            batch.hasWaitingTasks
            ? DeadlineScheduler.shared.schedule(at: start + batch.timeout) { inbox.post(.deadline) } : nil
        if batch.hasWaitingTasks {
            await withDiscardingTaskGroup { group in
                let spawn: BatchExecution.Spawn = { group.addTask(operation: $0) }
                await execution.launchReadyTasks(spawn: spawn, cancellationCause: cancellationCause)
                while !execution.isFinished {
                    if let onResults { await report(&execution, to: onResults) }
                    for event in await inbox.next() {
                        execution.handle(event, cancellationCause: cancellationCause)
                    }
                    if execution.stopReason == nil {
                        await execution.launchReadyTasks(spawn: spawn, cancellationCause: cancellationCause)
                    }
                }
                execution.cancelRunningTasks()
                group.cancelAll()
            }
        } else {
            // Every task runs inline, dependents as soon as what they need is done, so one pass
            // runs them all: no task group to create and wait for (7% of a one-task batch's
            // responder CPU), and no events to wait for.
            await execution.launchReadyTasks(
                spawn: { _ in preconditionFailure("a batch of instant tasks started a child task") },
                cancellationCause: cancellationCause)
        }
        if let deadlineTimer { DeadlineScheduler.shared.cancel(deadlineTimer) }
        let result = execution.finish(duration: clock.now - start)
        if let onResults { await report(&execution, to: onResults) }
        return result
    }

    /// Runs `batch`, whose every operation runs synchronously (``Batch/runsAtOnce``), start to end
    /// on the calling thread, and returns every task's result in request order.
    ///
    /// For a caller that answers at once instead of from a task: nothing here waits, and no
    /// cancellation can reach it meanwhile; the batch's deadline still stops it.
    public static func runAtOnce(_ batch: Batch) -> BatchResult {
        runAtOnce(batch, splitTasks: splitTasks)
    }

    /// From how many tasks on a batch that runs at once is run in two halves at once, on a
    /// machine with more than one core: below, waking the second thread (tens of microseconds)
    /// would cost about as much as it saves.
    static let splitTasks = TwoThreads.areAvailable ? 2048 : .max

    /// ``runAtOnce(_:)``, splitting a batch of `splitTasks` tasks or more (on any machine:
    /// halves run one after the other where there is one core).
    ///
    /// A long batch whose tasks are independent (no dependencies, and `on_error` `continue`, so
    /// no task's end changes whether another runs) runs in two halves at once (see
    /// ``TwoThreads``), each half recording its tasks' results in an execution of its own; the
    /// second's are then taken into the first's.
    static func runAtOnce(_ batch: Batch, splitTasks: Int) -> BatchResult {
        precondition(batch.runsAtOnce, "runAtOnce needs a batch whose every operation runs synchronously")
        let clock = ContinuousClock()
        let start = clock.now
        let count = batch.tasks.count
        guard count >= max(splitTasks, 2), !batch.hasDependencies, batch.errorPolicy == .continue else {
            var execution = BatchExecution(batch: batch, start: start, clock: clock, inbox: nil)
            execution.runReadyTasksAtOnce()
            return execution.finish(duration: clock.now - start)
        }
        let split = count / 2
        var first = BatchExecution(batch: batch, start: start, clock: clock, inbox: nil, tasks: 0..<split)
        // The second half reads its inputs from a copy of the body: both threads retaining and
        // releasing one array's reference count, for every input and output, would make each
        // half slower than the whole batch on one thread (as in decoding, see `BatchDecoder`).
        var second = BatchExecution(
            batch: batch, start: start, clock: clock, inbox: nil, tasks: split..<count,
            body: batch.body.withUnsafeBufferPointer { Array($0) })
        // Each half changes only its own execution.
        TwoThreads.run {
            first.runReadyTasksAtOnce()
        } and: {
            second.runReadyTasksAtOnce()
        }
        first.take(split..<count, from: second)
        return first.finish(duration: clock.now - start)
    }

    private static func report(_ execution: inout BatchExecution, to onResults: ([TaskResult]) async -> Void) async {
        let results = execution.takeUnreported()
        if !results.isEmpty { await onResults(results) }
    }
}

/// Where a running batch's events arrive, from any thread: its child tasks, its timers and its
/// operations' callbacks.
///
/// The batch's task drains them in bursts, so a hundred sleeps ending in the same millisecond
/// wake it once or twice instead of a hundred times.
final class BatchInbox: Sendable {
    private struct State {
        var events: [BatchExecution.Event] = []
        var waiter: CheckedContinuation<[BatchExecution.Event], Never>?
    }

    private let state = NIOLockedValueBox(State())

    /// Delivers `event` to the batch's task.
    func post(_ event: BatchExecution.Event) {
        let wake = state.withLockedValue {
            state -> (CheckedContinuation<[BatchExecution.Event], Never>, [BatchExecution.Event])? in
            guard let waiter = state.waiter else {
                state.events.append(event)
                return nil
            }
            state.waiter = nil
            return (waiter, [event])
        }
        if let (waiter, events) = wake { waiter.resume(returning: events) }
    }

    /// Waits for the next events; `.cancelled` arrives when the calling task is cancelled.
    func next() async -> [BatchExecution.Event] {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[BatchExecution.Event], Never>) in
                let events = state.withLockedValue { state -> [BatchExecution.Event] in
                    if state.events.isEmpty { state.waiter = continuation }
                    defer { state.events.removeAll(keepingCapacity: true) }
                    return state.events
                }
                if !events.isEmpty { continuation.resume(returning: events) }
            }
        } onCancel: {
            post(.cancelled)
        }
    }
}

/// The mutable state of one running batch. Lives on the task that drives it.
struct BatchExecution {
    enum Event: Sendable {
        /// Task `index` ended.
        case finished(index: Int, outcome: TaskOutcome, duration: Duration)
        /// Task `index`, started without a task of its own, reached its timeout.
        case timedOut(index: Int)
        /// The batch reached its deadline.
        case deadline
        /// The batch's task was cancelled.
        case cancelled
    }

    /// Starts a child task of the batch's task group.
    typealias Spawn = (sending @escaping @isolated(any) () async -> Void) -> Void

    /// A task that has started and not ended.
    private struct Running {
        let started: ContinuousClock.Instant
        /// Set for an operation started without a task (see ``Operation/start(_:completion:)``).
        var handle: OperationHandle?
        var timeoutTimer: DeadlineScheduler.Timer?
    }

    private let batch: Batch
    /// Where raw-JSON inputs are read from: the batch's body, or a copy of it (the same bytes).
    private let body: [UInt8]
    private let clock: ContinuousClock
    private let deadline: ContinuousClock.Instant
    /// Where the events of tasks that wait arrive; `nil` for a batch that runs at once, which
    /// has none (an inbox was two allocations, a tenth of a one-task batch's).
    private let inbox: BatchInbox?
    /// Each task's result, by field (see ``BatchResult``); a record's status and duration are
    /// meaningful once it is resolved.
    private var records: [TaskRecord]
    private var outputs: TaskOutputs
    private var errors: [Int: TaskError] = [:]
    private var unresolvedDependencies: [Int]
    private var ready: ReadyTasks
    private var readyHead = 0
    private var running: [Int: Running] = [:]
    private var resolved = 0
    /// Indices resolved since the last `takeUnreported`, when results are reported as they come.
    private var unreported: [Int]?
    /// Set once the batch must stop early; every task not yet finished is cancelled with it.
    private(set) var stopReason: TaskError?

    /// An execution of `batch`, or, with `tasks`, of those tasks alone in a batch without
    /// dependencies, reading inputs from `body` (the batch's own by default, or a copy of it).
    init(
        batch: Batch, start: ContinuousClock.Instant, clock: ContinuousClock, inbox: BatchInbox?,
        reportsResults: Bool = false, tasks: Range<Int>? = nil, body: [UInt8]? = nil
    ) {
        precondition(tasks == nil || !batch.hasDependencies, "only independent tasks run apart from the others")
        self.batch = batch
        self.body = body ?? batch.body
        unreported = reportsResults ? [] : nil
        self.clock = clock
        self.inbox = inbox
        deadline = start + batch.timeout
        let count = batch.tasks.count
        records = Array(repeating: TaskRecord(), count: count)
        outputs = TaskOutputs(count: count, body: self.body)
        if batch.hasDependencies {
            let counts = batch.tasks.map { $0.dependencies.count }
            unresolvedDependencies = counts
            ready = ReadyTasks(counts.indices.filter { counts[$0] == 0 })
        } else {
            // Every task is ready, in request order, without a look at any.
            unresolvedDependencies = []
            ready = ReadyTasks(tasks ?? batch.tasks.indices)
        }
    }

    /// True once no further event can change a result.
    var isFinished: Bool {
        resolved == records.count || stopReason != nil || (running.isEmpty && readyHead == ready.count)
    }

    /// Starts ready tasks: instant ones inline, others up to the concurrency limit, without a task
    /// where the operation can, else as child tasks.
    mutating func launchReadyTasks(
        spawn: Spawn, cancellationCause: @Sendable () -> CancellationCause
    ) async {
        // Consecutive inline tasks share a clock reading: one task's end is the next one's start.
        var previousEnd: ContinuousClock.Instant?
        var inlineRun = 0
        while stopReason == nil, readyHead < ready.count {
            let index = ready[readyHead]
            let isInstant = batch.tasks[index].isInstant
            if !isInstant {
                previousEnd = nil
                guard running.count < batch.concurrency else { return }
            }
            readyHead += 1
            guard let work = work(for: index, cancellationCause: cancellationCause) else { continue }
            guard isInstant else {
                start(index, work, spawn: spawn)
                continue
            }
            // Asking for cancellation takes a lock: once per 64 inline tasks (microseconds)
            // is soon enough.
            if inlineRun & 63 == 0, Task.isCancelled {
                stopReason = cancellationCause().error
                return
            }
            inlineRun += 1
            let started = previousEnd ?? clock.now
            if started >= deadline {
                stopReason = Self.batchTimeout(batch.timeout)
                return
            }
            if let ended = runSynchronously(index, work, started: started) {
                previousEnd = ended
                continue
            }
            // Declared instant, but not an InstantOperation: its one asynchronous call, inline.
            let outcome = await TaskExecutor.run(work, timeout: nil)
            let ended = clock.now
            previousEnd = ended
            record(outcome, for: index, duration: ended - started, cancellationCause: cancellationCause)
        }
    }

    /// Runs every ready task, and the dependents each makes ready, on the calling thread: for a
    /// batch whose every operation runs synchronously.
    mutating func runReadyTasksAtOnce() {
        // Timed in plain nanoseconds (see `Ticks`); one task's end is the next one's start.
        // Tasks of a `RawJSONOperation`, which take tens of nanoseconds, are timed in groups of
        // up to eight that share their time equally: reading the clock after each was a fifth of
        // running them. Any other task is timed alone.
        var previousEnd = Ticks.now()
        let deadline = Ticks.after(previousEnd, batch.timeout)
        // The tasks run since the clock was last read: `ready[groupHead..<readyHead]`.
        var groupHead = readyHead
        func closeGroup(_ execution: inout BatchExecution) {
            let count = execution.readyHead - groupHead
            guard count > 0 else { return }
            let now = Ticks.now()
            let share = (now - previousEnd) / Int64(count)
            for position in groupHead..<execution.readyHead {
                execution.records[execution.ready[position]].nanoseconds = share
            }
            previousEnd = now
            groupHead = execution.readyHead
        }
        defer { closeGroup(&self) }
        while stopReason == nil, readyHead < ready.count {
            let index = ready[readyHead]
            let raw = batch.tasks[index].rawWork
            if raw == nil || readyHead - groupHead == 8 { closeGroup(&self) }
            if previousEnd >= deadline {
                stopReason = Self.batchTimeout(batch.timeout)
                return
            }
            readyHead += 1
            if let raw {
                // Called where it lies: an operation copied out of the array is an existential
                // copied and destroyed through its witness table.
                let result = batch.rawJSONOperations.withUnsafeBufferPointer { operations in
                    Result { try operations[raw.operation].runInstantly(RawJSON(trusted: body[raw.input])) }
                }
                // Its time is set when its group closes.
                finish(index, consume result, nanoseconds: 0)
                continue
            }
            let started = previousEnd
            let result: Result<RawJSON, any Error>
            if batch.tasks[index].deferredInput == nil {
                // Run where it lies: a copy of the work out of the table cost a retain and a
                // release of all it holds, per task.
                result = batch.tasks.withUnsafeBufferPointer { $0[index].work!.runInstantly()! }
            } else {
                guard let work = work(for: index, cancellationCause: { .clientGone }) else {
                    groupHead = readyHead
                    continue
                }
                result = work.runInstantly()!
            }
            let ended = Ticks.now()
            previousEnd = ended
            groupHead = readyHead
            finish(index, consume result, nanoseconds: ended - started)
        }
    }

    /// Records how task `index`, run at once, ended.
    private mutating func finish(_ index: Int, _ result: consuming Result<RawJSON, any Error>, nanoseconds: Int64) {
        switch consume result {
        case .success(let output):
            succeeded(index, output, nanoseconds: nanoseconds)
        case .failure(let error):
            // A synchronous operation cannot see cancellation, so the cause is never asked for.
            record(
                TaskExecutor.outcome(of: .failure(error)), for: index, duration: .nanoseconds(nanoseconds),
                cancellationCause: { .clientGone })
        }
    }

    /// Runs task `index` now if its operation runs synchronously and records how it ended;
    /// returns when it ended, or `nil` (nothing done) when the operation needs an asynchronous call.
    private mutating func runSynchronously(
        _ index: Int, _ work: PreparedTask, started: ContinuousClock.Instant
    ) -> ContinuousClock.Instant? {
        guard let result = work.runInstantly() else { return nil }
        let ended = clock.now
        // A synchronous operation cannot see cancellation, so the cause is never asked for.
        record(TaskExecutor.outcome(of: result), for: index, duration: ended - started, cancellationCause: { .clientGone })
        return ended
    }

    /// The task's work; for an input with references, prepared now from the outputs it reads.
    /// `nil` when that fails, with the failure recorded.
    private mutating func work(
        for index: Int, cancellationCause: @Sendable () -> CancellationCause
    ) -> PreparedTask? {
        if let work = batch.tasks[index].work { return work }
        if let raw = batch.tasks[index].rawWork {
            return .rawJSON(batch.rawJSONOperations[raw.operation], input: RawJSON(trusted: body[raw.input]))
        }
        // Every referenced task is a dependency, so it has succeeded and its output is here.
        switch batch.tasks[index].deferredInput!.prepare(output: { outputs[$0] }) {
        case .success(let work):
            return work
        case .failure(let error):
            record(.failed(error), for: index, duration: .zero, cancellationCause: cancellationCause)
            return nil
        }
    }

    private mutating func start(_ index: Int, _ work: PreparedTask, spawn: Spawn) {
        let clock = clock
        guard let inbox else { preconditionFailure("a batch whose tasks wait runs with an inbox") }
        let started = clock.now
        // A timeout that cannot come before the batch deadline needs no timer of its own: the
        // deadline stops the task (as batch_timeout) at the same moment. By default both are
        // 60 s, so most tasks run with one timer fewer.
        let task = batch.tasks[index]
        let timeout = task.timeout < deadline - started ? task.timeout : nil
        let taskDeadline = timeout.map { started + $0 } ?? deadline
        let handle = work.start(deadline: taskDeadline) { result in
            let outcome = TaskExecutor.outcome(of: result)
            inbox.post(.finished(index: index, outcome: outcome, duration: clock.now - started))
        }
        if let handle {
            let timer = timeout.map { timeout in
                DeadlineScheduler.shared.schedule(at: started + timeout) { inbox.post(.timedOut(index: index)) }
            }
            running[index] = Running(started: started, handle: handle, timeoutTimer: timer)
            return
        }
        running[index] = Running(started: started)
        spawn {
            let outcome = await TaskDeadline.$current.withValue(taskDeadline) {
                await TaskExecutor.run(work, timeout: timeout)
            }
            inbox.post(.finished(index: index, outcome: outcome, duration: clock.now - started))
        }
    }

    /// Takes the results of the tasks in `range` from `other`, an execution of the same batch
    /// that ran those tasks (and only those) while this one ran others.
    mutating func take(_ range: Range<Int>, from other: BatchExecution) {
        for index in range where other.records[index].isResolved {
            records[index] = other.records[index]
        }
        // The other's body, if a copy, holds the same bytes at the same places as this one's.
        outputs.take(range, from: other.outputs)
        errors.merge(other.errors) { _, theirs in theirs }
        resolved += other.resolved
        if stopReason == nil { stopReason = other.stopReason }
    }

    /// Stops every task still running and reports it cancelled, for the reason the batch stopped.
    mutating func cancelRunningTasks() {
        let now = clock.now
        let reason = stopReason ?? TaskError(code: "cancelled", message: "the batch was cancelled")
        for (index, task) in running {
            task.handle?.cancel()
            if let timer = task.timeoutTimer { DeadlineScheduler.shared.cancel(timer) }
            resolve(index, .cancelled, error: reason, duration: now - task.started)
        }
        running.removeAll()
    }

    mutating func handle(_ event: Event, cancellationCause: @Sendable () -> CancellationCause) {
        switch event {
        case .finished(let index, let outcome, let duration):
            // A late report from a task already stopped (timed out, or the batch stopped) is stale.
            guard let task = running.removeValue(forKey: index) else { return }
            if let timer = task.timeoutTimer { DeadlineScheduler.shared.cancel(timer) }
            record(outcome, for: index, duration: duration, cancellationCause: cancellationCause)
        case .timedOut(let index):
            guard let task = running.removeValue(forKey: index) else { return }
            task.handle?.cancel()
            record(
                .failed(TaskExecutor.timeoutError(batch.tasks[index].timeout)), for: index,
                duration: clock.now - task.started, cancellationCause: cancellationCause)
        case .deadline:
            if stopReason == nil { stopReason = Self.batchTimeout(batch.timeout) }
        case .cancelled:
            if stopReason == nil { stopReason = cancellationCause().error }
        }
        if stopReason == nil, Task.isCancelled {
            stopReason = cancellationCause().error
        }
    }

    private mutating func record(
        _ outcome: TaskOutcome, for index: Int, duration: Duration,
        cancellationCause: @Sendable () -> CancellationCause
    ) {
        switch outcome {
        case .succeeded(let output):
            succeeded(index, output, nanoseconds: duration.wholeNanoseconds)
        case .failed(let error):
            resolve(index, .failed, error: error, duration: duration)
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
            resolve(index, .cancelled, error: error, duration: duration)
        }
    }

    /// Records task `index`'s output, and makes ready the dependents waiting for nothing else.
    private mutating func succeeded(_ index: Int, _ output: consuming RawJSON, nanoseconds: Int64) {
        outputs[index] = output
        resolve(index, .succeeded, nanoseconds: nanoseconds)
        guard batch.hasDependencies else { return }
        for dependent in batch.dependents[index] {
            unresolvedDependencies[dependent] -= 1
            if unresolvedDependencies[dependent] == 0, !records[dependent].isResolved { ready.append(dependent) }
        }
    }

    /// Marks every task that transitively depends on `index` as skipped.
    private mutating func skipDependents(of index: Int) {
        var stack = [index]
        while let failed = stack.popLast() {
            let failedId = batch.ids[failed]
            for dependent in batch.dependents(of: failed) where !records[dependent].isResolved {
                let error = TaskError(
                    code: "dependency_failed", message: "dependency '\(failedId)' did not succeed")
                resolve(dependent, .skipped, error: error, duration: .zero)
                stack.append(dependent)
            }
        }
    }

    private mutating func resolve(_ index: Int, _ status: TaskStatus, error: TaskError? = nil, duration: Duration) {
        resolve(index, status, error: error, nanoseconds: duration.wholeNanoseconds)
    }

    private mutating func resolve(_ index: Int, _ status: TaskStatus, error: TaskError? = nil, nanoseconds: Int64) {
        records[index] = TaskRecord(nanoseconds: nanoseconds, status: status, isResolved: true)
        if let error { errors[index] = error }
        resolved += 1
        unreported?.append(index)
    }

    /// The results resolved since the last call, in the order they were resolved.
    mutating func takeUnreported() -> [TaskResult] {
        guard let indices = unreported, !indices.isEmpty else { return [] }
        unreported = []
        return indices.map { index in
            TaskResult(
                id: batch.ids[index], status: records[index].status, output: outputs[index],
                error: errors[index], duration: .nanoseconds(records[index].nanoseconds))
        }
    }

    /// Reports every task that never finished as cancelled and builds the result.
    mutating func finish(duration: Duration) -> BatchResult {
        let reason = stopReason ?? TaskError(code: "cancelled", message: "the batch was cancelled")
        for index in records.indices where !records[index].isResolved {
            resolve(index, .cancelled, error: reason, duration: .zero)
        }
        return BatchResult(
            ids: batch.ids, records: records, outputs: outputs, errors: errors, duration: duration)
    }

    private static func batchTimeout(_ timeout: Duration) -> TaskError {
        TaskError(code: "batch_timeout", message: "the batch exceeded its \(TaskExecutor.describe(timeout)) deadline")
    }
}

/// The tasks of a batch that have become ready, in that order: a range while every task is ready
/// from the start (a batch without dependencies, which never adds any), else a list.
struct ReadyTasks {
    private let initial: Range<Int>
    private var added: [Int] = []

    /// The tasks of `initial`, ready now.
    init(_ initial: Range<Int>) {
        self.initial = initial
    }

    /// `tasks`, ready now.
    init(_ tasks: [Int]) {
        initial = 0..<0
        added = tasks
    }

    var count: Int { initial.count + added.count }

    subscript(position: Int) -> Int {
        position < initial.count ? initial.lowerBound + position : added[position - initial.count]
    }

    mutating func append(_ task: Int) {
        added.append(task)
    }
}
