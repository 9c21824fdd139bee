import CoreMetrics
import Metrics
import FanoutEngine
import Foundation
import Logging
import NIOConcurrencyHelpers

/// Runs asynchronous batches: claims queued jobs from the shared store, runs them on Swift's
/// pool (never on the transport's event loops), records progress and results, and ends the jobs
/// of responders that died.
///
/// Every responder process has one. A job accepted is never lost: it waits in the store until
/// some process claims it; a process that dies mid-job is seen to be gone (its lock or
/// heartbeats stop), and any other process, or the next one started, reports the job `failed`
/// with the code `interrupted`. A responder that the others stopped seeing as alive stops its
/// jobs without storing their outcome: they are reported interrupted, never finished twice.
public final class JobManager: Sendable {
    /// Limits and timings; every field has a default.
    public struct Configuration: Sendable {
        /// Jobs this process runs at once.
        public var maximumRunning = 4
        /// Jobs queued or running at once, over all processes; past it, submissions get 503.
        public var maximumPending = 10_000
        /// Jobs queued or running at once for one client, when clients are kept apart; past it,
        /// that client's submissions get 429.
        public var maximumPendingPerClient = 1_000
        /// How long a finished job is kept, in seconds.
        public var retentionSeconds: Double = 24 * 3600
        /// The largest stored `results` array of one job, in bytes; past it the job fails with
        /// `result_too_large` and keeps only its summary.
        public var maximumResultBytes = 16 * 1024 * 1024
        /// How often the store is checked for jobs queued by other processes.
        public var pollInterval: Duration = .milliseconds(250)
        /// How often running jobs are marked alive, cancellations made elsewhere are looked for
        /// (the fallback when the store does not announce them), and responders that are gone are
        /// looked for.
        public var heartbeatInterval: Duration = .milliseconds(500)
        /// A running job whose heartbeat is older than this, in seconds, is declared interrupted.
        public var staleAfterSeconds: Double = 10
        /// How often expired jobs are removed.
        public var sweepInterval: Duration = .seconds(60)
        /// How often a running job's progress is written.
        public var progressInterval: Duration = .milliseconds(200)

        /// The defaults.
        public init() {}
    }

    private struct State {
        var running: [String: Task<Void, Never>] = [:]
        /// Who this responder is to the store; a new one after its liveness was lost.
        var owner = JobOwner.current()
        /// Whether the store knows `owner` as alive; no job is claimed otherwise.
        var attached = false
        /// Slots held for jobs being submitted here, to be started here once stored.
        var reserved = 0
        var stopping = false
        /// Set by ``endGrace()``.
        var graceOver = false
        /// Whether queued jobs may exist that this process has not looked for since: set by
        /// notifications, by jobs queued here, at each poll, and while claims fill every slot. A
        /// job ending here frees a slot but says nothing of the queue: it does not cost a claim.
        var workKnown = true
        var waiter: CheckedContinuation<Void, Never>?
        var wakePending = false
        var loops: [Task<Void, Never>] = []
        /// What jobs accepted here know of their request (forwarded headers, request id): kept in
        /// memory only, never in the store, until the job runs.
        var contexts: [String: RequestContext] = [:]
    }

    /// The store this manager works on.
    public let store: any JobStore
    public let configuration: Configuration
    private let decoder: BatchDecoder
    private let logger: Logger
    private let state = NIOLockedValueBox(State())
    private let metrics: Metrics

    /// What the manager reports: store write latency, and every batch it runs.
    public struct Metrics: Sendable {
        let submitLatency: CoreMetrics.Timer
        let claimLatency: CoreMetrics.Timer
        let finishLatency: CoreMetrics.Timer
        let batchFinished: @Sendable (Batch, BatchResult) -> Void

        /// Store writes timed into `fanout_job_store_write_duration_seconds{operation}` of
        /// `factory`; `batchFinished` sees each job's batch and result.
        public init(factory: any MetricsFactory, batchFinished: @escaping @Sendable (Batch, BatchResult) -> Void) {
            func timer(_ operation: String) -> CoreMetrics.Timer {
                CoreMetrics.Timer(
                    label: "fanout_job_store_write_duration_seconds", dimensions: [("operation", operation)],
                    factory: factory)
            }
            submitLatency = timer("submit")
            claimLatency = timer("claim")
            finishLatency = timer("finish")
            self.batchFinished = batchFinished
        }

        /// Nothing recorded.
        public static var none: Metrics { Metrics(factory: NOOPMetricsHandler.instance) { _, _ in } }
    }

    public init(
        store: any JobStore, decoder: BatchDecoder, configuration: Configuration, logger: Logger,
        metrics: Metrics = .none
    ) {
        self.store = store
        self.decoder = decoder
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
    }

    /// Starts claiming and running jobs, and the heartbeat, recovery and retention sweeps.
    public func start() {
        state.withLockedValue { state in
            state.loops = [
                Task {
                    await self.attach()
                    await self.workLoop()
                },
                Task { await self.maintenanceLoop() },
            ]
        }
    }

    private var owner: JobOwner { state.withLockedValue { $0.owner } }

    /// Makes this responder known to the store, retrying until it is or shutdown begins.
    private func attach() async {
        var delay = Duration.milliseconds(100)
        while !isStopping {
            let owner = owner
            let events = JobStoreEvents(
                workQueued: { [weak self] in self?.wake(work: true) },
                cancelRequested: { [weak self] id in
                    _ = self?.state.withLockedValue { $0.running[id] }?.cancel()
                },
                ownershipLost: { [weak self] in self?.ownershipLost(owner) })
            do {
                try await store.attach(owner, events: events)
                state.withLockedValue { $0.attached = true }
                wake(work: true)
                return
            } catch {
                logger.error("could not attach to the job store", metadata: ["error": "\(error)"])
                try? await DeadlineScheduler.shared.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }

    /// The others no longer see `lost` as alive: its running jobs are theirs to report
    /// interrupted. Stop them (``run(_:as:)`` stores nothing for them), then attach again as a new
    /// owner.
    private func ownershipLost(_ lost: JobOwner) {
        let tasks = state.withLockedValue { state -> [Task<Void, Never>]? in
            guard state.owner == lost, !state.stopping else { return nil }
            state.owner = .current()
            state.attached = false
            return Array(state.running.values)
        }
        guard let tasks else { return }
        logger.error(
            "this responder lost its liveness in the job store; stopping its jobs",
            metadata: ["running": "\(tasks.count)"])
        for task in tasks { task.cancel() }
        Task { await self.attach() }
    }

    /// Jobs this process is running now.
    public var runningCount: Int { state.withLockedValue { $0.running.count } }

    private var isStopping: Bool { state.withLockedValue { $0.stopping } }

    // MARK: Requests

    /// Queues a validated batch (see ``JobStore/submit(body:taskCount:idempotencyKey:maximumPending:now:id:pinnedTo:client:maximumPendingForClient:startedBy:)``),
    /// and starts it at once when this process has a free slot.
    ///
    /// - Parameter context: what the batch's operations know of its request. Its headers (the
    ///   credentials `http` tasks forward) are never stored: a job that has any runs only in this
    ///   process, which keeps them in memory; if the process stops first, the job fails with
    ///   `credentials_unavailable`.
    /// - Parameter client: the client the job belongs to, when clients are kept apart.
    public func submit(
        body: [UInt8], taskCount: Int, idempotencyKey: String?, context: RequestContext = .none,
        client: String? = nil
    ) async throws -> JobStore.Submission {
        let id = Job.newID()
        let pinned = !context.headers.isEmpty
        // Kept before the job exists, so that this process never runs it without its context.
        // Only for pinned jobs: any process may run the others, and the context would stay here.
        // With a free slot here, the job is stored as started by this process and runs at once:
        // no claim (and its flush) to wait for, no other process involved; it keeps its context
        // (the request's trace) too.
        let starter = state.withLockedValue { state -> JobOwner? in
            if pinned { state.contexts[id] = context }
            guard state.attached, !state.stopping,
                state.running.count + state.reserved < configuration.maximumRunning
            else { return nil }
            state.reserved += 1
            state.contexts[id] = context
            return state.owner
        }
        let submission: JobStore.Submission
        let submitStarted = ContinuousClock.now
        defer { metrics.submitLatency.record(duration: ContinuousClock.now - submitStarted) }
        do {
            submission = try await store.submit(
                body: body, taskCount: taskCount, idempotencyKey: idempotencyKey,
                maximumPending: configuration.maximumPending, now: Self.now(), id: id,
                pinnedTo: pinned ? owner : nil, client: client,
                maximumPendingForClient: client == nil ? .max : configuration.maximumPendingPerClient,
                startedBy: starter, requestID: context.requestID)
        } catch {
            state.withLockedValue { state in
                state.contexts.removeValue(forKey: id)
                if starter != nil { state.reserved -= 1 }
            }
            throw error
        }
        state.withLockedValue { state in
            if starter != nil { state.reserved -= 1 }
            switch submission {
            case .created(let job) where job.status == .running:
                // Stored as this process's: if this process lost its liveness meanwhile, the job
                // is the others' to report interrupted, like any other of its jobs.
                if let starter, starter == state.owner {
                    start(
                        JobClaim(id: id, body: body, isPinned: pinned, requestID: context.requestID), as: starter,
                        in: &state)
                } else {
                    state.contexts.removeValue(forKey: id)
                }
            case .created: if !pinned { state.contexts.removeValue(forKey: id) }
            default: state.contexts.removeValue(forKey: id)
            }
        }
        switch submission {
        case .created(let job) where job.status == .running: break
        case .created: wake(work: true)
        // The slot held for it is free again.
        default: if starter != nil { wake() }
        }
        return submission
    }

    /// Runs a claimed job in a task of its own, recorded in `state.running` until it ends.
    private func start(_ claim: JobClaim, as owner: JobOwner, in state: inout State) {
        state.running[claim.id] = Task {
            await self.run(claim, as: owner)
            _ = self.state.withLockedValue { $0.running.removeValue(forKey: claim.id) }
            self.wake()
        }
    }

    /// The job `id`, unless unknown or expired, or (when `client` is given) another client's.
    public func job(_ id: String, client: String? = nil) async throws -> Job? {
        try await store.job(id, now: Self.now(), client: client)
    }

    /// Cancels the job `id`: a queued one at once, a running one as soon as its process notices
    /// (at once when it is this process). Waits up to `wait` for a running job to end.
    public func cancel(
        _ id: String, client: String? = nil, wait: Duration = .seconds(2)
    ) async throws -> JobCancellation {
        let decoder = decoder
        let outcome = try await store.cancel(
            id, now: Self.now(), retention: configuration.retentionSeconds, client: client
        ) { body in
            (try? decoder.decode(body)).map {
                BatchResult.allCancelled($0, error: TaskError(code: "cancelled", message: "the job was cancelled"))
            }
        }
        if case .cancelled = outcome { _ = state.withLockedValue { $0.contexts.removeValue(forKey: id) } }
        guard case .requested(var job) = outcome else { return outcome }
        _ = state.withLockedValue { $0.running[id] }?.cancel()
        let clock = ContinuousClock()
        let deadline = clock.now + wait
        while !job.status.isFinished, clock.now < deadline {
            try await DeadlineScheduler.shared.sleep(for: .milliseconds(20))
            guard let latest = try await self.job(id, client: client) else { return .notFound }
            job = latest
        }
        return job.status.isFinished ? .cancelled(job) : .requested(job)
    }

    /// Ends the grace of a ``shutdown(grace:)`` in progress now: running jobs are cancelled.
    public func endGrace() {
        state.withLockedValue { $0.graceOver = true }
    }

    /// Stops claiming jobs, lets running ones finish for up to `grace` (or until ``endGrace()``),
    /// then cancels the rest; those are reported `failed` with the code `interrupted`.
    ///
    /// Call it from a task that is not cancelled: its waits are short sleeps.
    public func shutdown(grace: Duration) async {
        let loops = state.withLockedValue { state in
            state.stopping = true
            return state.loops
        }
        wake()
        let clock = ContinuousClock()
        let deadline = clock.now + grace
        while runningCount > 0, clock.now < deadline, !state.withLockedValue({ $0.graceOver }) {
            try? await DeadlineScheduler.shared.sleep(for: .milliseconds(20))
        }
        for task in state.withLockedValue({ Array($0.running.values) }) { task.cancel() }
        while runningCount > 0 { try? await DeadlineScheduler.shared.sleep(for: .milliseconds(10)) }
        for task in loops { task.cancel() }
        for task in loops { await task.value }
        // A claim in flight when shutdown began may have started jobs since: stop those too, so
        // that they end `interrupted` here rather than when the others see this process gone.
        for task in state.withLockedValue({ Array($0.running.values) }) { task.cancel() }
        while runningCount > 0 { try? await DeadlineScheduler.shared.sleep(for: .milliseconds(10)) }
        await store.detach(owner)
    }

    // MARK: Running jobs

    private func workLoop() async {
        while !isStopping {
            // Only as many as there are free slots: the others stay for other responders.
            let (owner, free) = state.withLockedValue { state -> (JobOwner, Int) in
                let free = state.attached ? configuration.maximumRunning - state.running.count - state.reserved : 0
                guard free > 0, state.workKnown else { return (state.owner, 0) }
                // Cleared before the claim: work announced while it runs sets it again.
                state.workKnown = false
                return (state.owner, free)
            }
            if free > 0 {
                do {
                    let started = ContinuousClock.now
                    // From a task of its own, which shutdown's cancelling of this loop does not
                    // reach: a claim cancelled after the store committed it left its jobs
                    // `running` with no one here to run them, until recovery declared them
                    // interrupted. Claimed whole, they start, and shutdown stops them as it does
                    // the others.
                    let (store, now) = (store, Self.now())
                    let claims = try await Task { try await store.claim(owner: owner, limit: free, now: now) }.value
                    metrics.claimLatency.record(duration: ContinuousClock.now - started)
                    state.withLockedValue { state in
                        for claim in claims { start(claim, as: owner, in: &state) }
                        // All slots taken: there may be more, for the next free slot.
                        if claims.count == free { state.workKnown = true }
                    }
                } catch {
                    state.withLockedValue { $0.workKnown = true }
                    logger.error("could not claim a job", metadata: ["error": "\(error)"])
                }
            }
            await waitForWake(timeout: configuration.pollInterval)
        }
    }

    private func run(_ claim: JobClaim, as owner: JobOwner) async {
        let context = state.withLockedValue { $0.contexts.removeValue(forKey: claim.id) }
        if claim.isPinned, context == nil {
            // Cannot happen (a pinned job is claimed only by the process that holds its context),
            // but running it without its credentials would send unauthenticated calls.
            let failure = TaskError(code: "credentials_unavailable", message: "the job's forwarded request headers are gone")
            await finish(claim.id, as: owner, status: .failed, outcome: JobOutcome(counts: .init()), error: failure)
            return
        }
        let batch: Batch
        do {
            // A job claimed here from the store knows its request's id, not its headers or trace.
            batch = try decoder.decode(claim.body, context: context ?? RequestContext(requestID: claim.requestID))
        } catch {
            // Valid when accepted; the server's limits may have changed since.
            let failure = TaskError(code: "invalid_request", message: "the batch is not valid under the current limits")
            await finish(claim.id, as: owner, status: .failed, outcome: JobOutcome(counts: .init()), error: failure)
            return
        }
        let clock = ContinuousClock()
        var progress = BatchResult.Summary()
        var lastWrite = clock.now
        let recordProgress = { [self] (results: [TaskResult]) async in
            for result in results { progress.add(result.status) }
            guard clock.now - lastWrite >= configuration.progressInterval else { return }
            lastWrite = clock.now
            do {
                try await store.recordProgress(claim.id, owner: owner, progress: progress)
            } catch {
                logger.warning("could not record progress", metadata: ["job": "\(claim.id)", "error": "\(error)"])
            }
        }
        let result = await BatchRunner.run(
            batch, cancellationCause: { [self] in isStopping ? .shutdown : .clientGone }, onResults: recordProgress)
        metrics.batchFinished(batch, result)
        // Encoded once, here, outside the store's write transaction.
        let outcome = JobOutcome(result)
        if owner != self.owner {
            // The others declared this responder gone: the job is theirs to report interrupted,
            // and storing an outcome here would end it twice.
            logger.warning("job stopped: its outcome is left to the responders that saw this one gone",
                metadata: ["job": "\(claim.id)"])
        } else if Task.isCancelled, isStopping {
            let error = TaskError(code: "interrupted", message: "the responder stopped before the job finished")
            await finish(claim.id, as: owner, status: .failed, outcome: outcome, error: error)
        } else if Task.isCancelled {
            await finish(claim.id, as: owner, status: .cancelled, outcome: outcome, error: nil)
        } else if (outcome.results?.count ?? 0) > configuration.maximumResultBytes {
            let error = TaskError(
                code: "result_too_large",
                message: "the results are larger than the \(configuration.maximumResultBytes) bytes a job may store")
            await finish(claim.id, as: owner, status: .failed, outcome: JobOutcome(counts: outcome.counts), error: error)
        } else {
            await finish(claim.id, as: owner, status: JobStatus(result.status), outcome: outcome, error: nil)
        }
    }

    private func finish(
        _ id: String, as owner: JobOwner, status: JobStatus, outcome: JobOutcome, error: TaskError?
    ) async {
        do {
            // A cancelled job's task is cancelled too, and GRDB refuses to start work for a
            // cancelled task: store the outcome from a task of its own.
            let (store, retention) = (store, configuration.retentionSeconds)
            let started = ContinuousClock.now
            defer { metrics.finishLatency.record(duration: ContinuousClock.now - started) }
            try await Task {
                try await store.finish(
                    id, owner: owner, status: status, outcome: outcome, error: error, now: Self.now(),
                    retention: retention)
            }.value
            logger.info("job finished", metadata: ["job": "\(id)", "status": "\(status.rawValue)"])
        } catch {
            // The job stays `running` without heartbeats: recovery reports it interrupted.
            logger.error("could not store a job's result", metadata: ["job": "\(id)", "error": "\(error)"])
        }
    }

    // MARK: Heartbeats, recovery, retention

    private func maintenanceLoop() async {
        let clock = ContinuousClock()
        var nextSweep = clock.now
        while !Task.isCancelled {
            do {
                let stopRequested = try await store.heartbeat(owner: owner, now: Self.now())
                let tasks = state.withLockedValue { state in stopRequested.compactMap { state.running[$0] } }
                for task in tasks { task.cancel() }
                try await recover()
                if clock.now >= nextSweep {
                    nextSweep = clock.now + configuration.sweepInterval
                    let removed = try await store.sweep(now: Self.now())
                    if removed > 0 { logger.info("expired jobs removed", metadata: ["count": "\(removed)"]) }
                }
            } catch {
                logger.error("job maintenance failed", metadata: ["error": "\(error)"])
            }
            try? await DeadlineScheduler.shared.sleep(for: configuration.heartbeatInterval)
        }
    }

    private func recover() async throws {
        let decoder = decoder
        let ended = try await store.recoverAbandoned(
            now: Self.now(), staleAfter: configuration.staleAfterSeconds, retention: configuration.retentionSeconds,
            interruptedResults: { body, error in
                (try? decoder.decode(body)).map { BatchResult.allCancelled($0, error: error) }
            })
        for id in ended {
            logger.warning("job interrupted: its responder is gone", metadata: ["job": "\(id)"])
        }
    }

    // MARK: Waking the work loop

    /// Makes the work loop look again: jobs may be queued, or a slot freed.
    ///
    /// - Parameter work: whether queued jobs may be waiting (rather than only a slot freed).
    func wake(work: Bool = false) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            if work { state.workKnown = true }
            guard let waiter = state.waiter else {
                state.wakePending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    private func waitForWake(timeout: Duration) async {
        // Each poll looks at the queue: the fallback for a notification that never came.
        let timer = DeadlineScheduler.shared.schedule(at: .now + timeout) { [self] in wake(work: true) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { state -> Bool in
                if state.wakePending || state.stopping {
                    state.wakePending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
        DeadlineScheduler.shared.cancel(timer)
    }

    static func now() -> Double {
        Date().timeIntervalSince1970
    }
}
