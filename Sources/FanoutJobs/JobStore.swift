import FanoutEngine

#if canImport(Glibc)
    import Glibc
#endif

/// Where asynchronous jobs live, shared by every responder that runs them: ``SQLiteJobStore``
/// for the processes of one host, ``PostgresJobStore`` for many hosts.
///
/// Both keep the same promises: an acknowledged job is in the store; a queued job is claimed by
/// exactly one owner; every write about a running job is fenced on its owner, so that a job
/// declared `interrupted` is never also finished by the owner that lost it.
public protocol JobStore: AnyObject, Sendable {
    typealias Submission = JobSubmission
    typealias Owner = JobOwner
    typealias Outcome = JobOutcome
    typealias Claim = JobClaim
    typealias CancelOutcome = JobCancellation

    /// Where the jobs are, for the start-up log line (never with a password).
    var location: String { get }

    /// Makes `owner` known as alive to the other responders, and starts telling `events` what
    /// they do: work queued, cancellations, and the loss of `owner`'s liveness.
    func attach(_ owner: Owner, events: JobStoreEvents) async throws

    /// Ends `owner`'s life as seen by the others (at shutdown, after its jobs ended).
    func detach(_ owner: Owner) async

    /// Releases connections and files. The store is not used afterwards.
    func close() async

    /// Queues a validated batch, or finds the job its idempotency key already names.
    ///
    /// - Parameters:
    ///   - body: the request body, decoded again and run by whichever responder claims the job.
    ///   - maximumPending: the most jobs queued or running at once.
    ///   - id: the new job's id (see ``Job/newID()``).
    ///   - pinnedTo: the only responder that may run the job, for one that needs what only that
    ///     process holds (forwarded credentials); `nil` lets any run it.
    ///   - client: the client the job belongs to, when clients are kept apart: its idempotency
    ///     key is its own, and only it sees the job.
    ///   - maximumPendingForClient: the most jobs queued or running for `client`.
    ///   - startedBy: the owner that starts the job itself at once (it has a free slot): the job
    ///     is stored already claimed by it, `running`, sparing a claim and its flush.
    ///   - requestID: the id of the request that submitted it, shown in the job document.
    /// - Returns: the outcome, once it is durable.
    func submit(
        body: [UInt8], taskCount: Int, idempotencyKey: String?, maximumPending: Int, now: Double, id: String,
        pinnedTo: Owner?, client: String?, maximumPendingForClient: Int, startedBy: Owner?, requestID: String?
    ) async throws -> Submission

    /// The job `id`, unless unknown or expired, or (when `client` is given) another client's.
    func job(_ id: String, now: Double, client: String?) async throws -> Job?

    /// Cancels a queued job at once, or flags a running one for its owner to stop.
    ///
    /// - Parameter cancelledResults: every task of a job's batch reported cancelled, for a job
    ///   that never started.
    func cancel(
        _ id: String, now: Double, retention: Double, client: String?,
        cancelledResults: @Sendable ([UInt8]) -> BatchResult?
    ) async throws -> CancelOutcome

    /// Claims up to `limit` of the oldest queued jobs `owner` may run.
    func claim(owner: Owner, limit: Int, now: Double) async throws -> [Claim]

    /// Marks `owner`'s running jobs alive; returns those a `DELETE` asked to stop.
    func heartbeat(owner: Owner, now: Double) async throws -> Set<String>

    /// Records how many tasks of a running job have finished, for `GET` to show; only while the
    /// job is still `owner`'s.
    func recordProgress(_ id: String, owner: Owner, progress: BatchResult.Summary) async throws

    /// Stores the outcome of a job `owner` ran; does nothing if the job is no longer its own (it
    /// was declared interrupted meanwhile).
    func finish(
        _ id: String, owner: Owner, status: JobStatus, outcome: Outcome, error: TaskError?, now: Double,
        retention: Double
    ) async throws

    /// Ends every running job whose responder is gone, each reported `failed` with the code
    /// `interrupted` (its tasks `cancelled`): its tasks may have partly run, so it is not run
    /// again. Queued jobs pinned to a responder that is gone fail with `credentials_unavailable`.
    ///
    /// - Parameter staleAfter: seconds without a heartbeat after which a responder counts as gone
    ///   even if it seems to exist.
    /// - Returns: the ids of the jobs ended.
    func recoverAbandoned(
        now: Double, staleAfter: Double, retention: Double,
        interruptedResults: @Sendable ([UInt8], TaskError) -> BatchResult?
    ) async throws -> [String]

    /// Removes finished jobs past their retention time.
    ///
    /// - Returns: how many were removed.
    func sweep(now: Double) async throws -> Int

    /// How many jobs wait to be claimed, over every responder (for `/metrics`).
    func queuedCount() async throws -> Int

    /// How many times the job was claimed: 1 for a job that ran, as every job should.
    func claims(_ id: String) async throws -> Int?

    /// How many transactions submissions were committed in: fewer than submissions when they
    /// arrive together.
    var submissionCommits: Int { get }
}

extension JobStore {
    /// Queues a job (see the full form).
    public func submit(
        body: [UInt8], taskCount: Int, idempotencyKey: String?, maximumPending: Int, now: Double,
        id: String = Job.newID(), pinnedTo: Owner? = nil, client: String? = nil, maximumPendingForClient: Int = .max,
        startedBy: Owner? = nil, requestID: String? = nil
    ) async throws -> Submission {
        try await submit(
            body: body, taskCount: taskCount, idempotencyKey: idempotencyKey, maximumPending: maximumPending, now: now,
            id: id, pinnedTo: pinnedTo, client: client, maximumPendingForClient: maximumPendingForClient,
            startedBy: startedBy, requestID: requestID)
    }

    /// The job `id`, whoever's it is.
    public func job(_ id: String, now: Double) async throws -> Job? {
        try await job(id, now: now, client: nil)
    }

    /// Cancels the job `id`, whoever's it is.
    public func cancel(
        _ id: String, now: Double, retention: Double, cancelledResults: @Sendable ([UInt8]) -> BatchResult?
    ) async throws -> CancelOutcome {
        try await cancel(id, now: now, retention: retention, client: nil, cancelledResults: cancelledResults)
    }
}

/// One submission, as a store's `submit` received it (the idempotency key already prefixed with
/// the client).
struct SubmitRequest: Sendable {
    let id: String
    let body: [UInt8]
    let hash: String
    let taskCount: Int
    let idempotencyKey: String?
    let maximumPending: Int
    let now: Double
    let pinnedTo: JobOwner?
    let client: String?
    let maximumPendingForClient: Int
    let startedBy: JobOwner?
    let requestID: String?
}

extension SubmitRequest {
    /// The job this request creates, as stored.
    var newJob: Job {
        Job(
            id: id, status: startedBy == nil ? .queued : .running, taskCount: taskCount, progress: .init(),
            createdAt: now, startedAt: startedBy == nil ? nil : now, cancelRequested: false, requestID: requestID)
    }
}

/// What the store tells the responder attached to it.
public struct JobStoreEvents: Sendable {
    /// Jobs were queued somewhere: look for work now rather than at the next poll.
    public var workQueued: @Sendable () -> Void
    /// A `DELETE` asked for the job with this id to stop.
    public var cancelRequested: @Sendable (String) -> Void
    /// The owner is no longer seen as alive by the others (its lock or its heartbeat was lost):
    /// its running jobs are being reported interrupted, so it must stop them, not finish them.
    public var ownershipLost: @Sendable () -> Void

    /// Events to closures; each defaults to doing nothing.
    public init(
        workQueued: @escaping @Sendable () -> Void = {}, cancelRequested: @escaping @Sendable (String) -> Void = { _ in },
        ownershipLost: @escaping @Sendable () -> Void = {}
    ) {
        self.workQueued = workQueued
        self.cancelRequested = cancelRequested
        self.ownershipLost = ownershipLost
    }
}

/// The result of a submission.
public enum JobSubmission: Sendable {
    /// A new job, queued.
    case created(Job)
    /// The idempotency key was seen before with the same body: that job.
    case replayed(Job)
    /// The idempotency key was seen before with a different body.
    case keyReused
    /// As many jobs as allowed are queued or running.
    case full
    /// As many jobs as one client may have are queued or running for this client.
    case clientFull
}

/// Who runs jobs: one responder process, for one attachment to the store.
public struct JobOwner: Sendable, Hashable {
    /// Unique per process start (and per re-attachment), so that a reused PID or a responder that
    /// lost its liveness is never mistaken for the one before.
    public let token: String
    public let pid: Int32

    /// An owner with this token and PID.
    public init(token: String, pid: Int32) {
        self.token = token
        self.pid = pid
    }

    /// This process, with a fresh token.
    public static func current() -> JobOwner {
        JobOwner(token: Job.randomHex(bytes: 8), pid: getpid())
    }
}

/// What a finished job keeps: its results and summary, encoded, and its tasks' counts.
public struct JobOutcome: Sendable {
    /// The `results` array (JSON), or `nil` when not kept.
    public var results: [UInt8]?
    /// The `summary` object (JSON), or `nil` when not kept.
    public var summary: [UInt8]?
    /// How many tasks ended with each status.
    public var counts: BatchResult.Summary

    /// Everything `result` says, encoded once.
    public init(_ result: BatchResult) {
        results = result.resultsJSONBytes()
        summary = result.summaryJSONObjectBytes()
        counts = result.summary
    }

    /// Only the counts: the results were too large to keep, or there are none.
    public init(counts: BatchResult.Summary) {
        self.counts = counts
    }
}

/// A job claimed for running.
public struct JobClaim: Sendable, Equatable {
    public let id: String
    public let body: [UInt8]
    /// Whether the job was pinned to this responder: it needs request headers (credentials)
    /// that only this process holds, in memory.
    public let isPinned: Bool
    /// The id of the request that submitted the job, sent on its `http` calls.
    public var requestID: String? = nil
}

/// What a cancellation request found.
public enum JobCancellation: Sendable {
    /// No such job (or it expired).
    case notFound
    /// It had already finished; nothing changed.
    case finished(Job)
    /// It was queued and is now cancelled.
    case cancelled(Job)
    /// It is running: its owner will stop it.
    case requested(Job)
}

/// Why a job failed when its responder went away.
extension TaskError {
    static let interrupted = TaskError(
        code: "interrupted", message: "the responder running this job stopped before it finished")
    static let credentialsUnavailable = TaskError(
        code: "credentials_unavailable",
        message: "the job forwards request headers to an upstream; they were kept only in the memory "
            + "of the responder that accepted the job, which stopped before running it: submit it again")
}
