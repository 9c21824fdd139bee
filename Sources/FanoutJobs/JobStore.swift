import Crypto
import FanoutEngine
import Foundation
import GRDB

/// Asynchronous batches in SQLite (WAL mode), shared by every responder process that opens the
/// same data directory.
///
/// Every change is one SQL statement or one immediate transaction, so processes never see a
/// half-made change: a job is claimed by exactly one of them (`UPDATE … RETURNING` on a queued
/// row), and an idempotency key maps to one job. Submissions that arrive together share one
/// transaction and one flush to disk (``GroupCommit``), each answered after that commit. GRDB
/// runs the blocking SQLite calls on its own dispatch queues; callers only suspend.
public final class JobStore: Sendable {
    /// The result of a submission.
    public enum Submission: Sendable {
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

    /// Who runs jobs: one responder process.
    public struct Owner: Sendable {
        /// Unique per process start, so that a reused PID is not mistaken for the old process.
        public let token: String
        public let pid: Int32

        /// This process, with a fresh token.
        public static func current() -> Owner {
            Owner(token: JobStore.randomHex(bytes: 8), pid: getpid())
        }
    }

    /// What a finished job keeps: its results and summary, encoded, and its tasks' counts.
    public struct Outcome: Sendable {
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
    public struct Claim: Sendable {
        public let id: String
        public let body: [UInt8]
        /// Whether the job was pinned to this responder: it needs request headers (credentials)
        /// that only this process holds, in memory.
        public let isPinned: Bool
    }

    private let pool: DatabasePool
    private let submissions: GroupCommit<SubmitRequest, Submission>
    /// The database file.
    public let path: String

    /// Opens (creating if needed) `jobs.sqlite` in `directory` and brings its schema up to date.
    public init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/jobs.sqlite"
        var configuration = Configuration()
        // Several processes write; wait for each other's short transactions instead of failing.
        configuration.busyMode = .timeout(10)
        configuration.label = "fanout-jobs"
        pool = try DatabasePool(path: path, configuration: configuration)
        submissions = Self.groupCommit(pool)
        try Self.migrator.migrate(pool)
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE jobs (
                        id TEXT PRIMARY KEY,
                        status TEXT NOT NULL,
                        body BLOB NOT NULL,
                        body_hash TEXT NOT NULL,
                        idempotency_key TEXT UNIQUE,
                        task_count INTEGER NOT NULL,
                        created_at REAL NOT NULL,
                        started_at REAL,
                        finished_at REAL,
                        expires_at REAL,
                        owner TEXT,
                        owner_pid INTEGER,
                        heartbeat_at REAL,
                        claims INTEGER NOT NULL DEFAULT 0,
                        cancel_requested INTEGER NOT NULL DEFAULT 0,
                        succeeded INTEGER NOT NULL DEFAULT 0,
                        failed INTEGER NOT NULL DEFAULT 0,
                        skipped INTEGER NOT NULL DEFAULT 0,
                        cancelled INTEGER NOT NULL DEFAULT 0,
                        results BLOB,
                        summary BLOB,
                        error_code TEXT,
                        error_message TEXT
                    );
                    CREATE INDEX jobs_by_status ON jobs(status, created_at);
                    CREATE INDEX jobs_by_expiry ON jobs(expires_at) WHERE expires_at IS NOT NULL;
                    """)
        }
        // Jobs that forward request headers (credentials) to an upstream run only in the process
        // that accepted them: the headers are never stored, only held in that process's memory.
        migrator.registerMigration("v2-pinned-jobs") { db in
            try db.execute(
                sql: """
                    ALTER TABLE jobs ADD COLUMN pinned_owner TEXT;
                    ALTER TABLE jobs ADD COLUMN pinned_pid INTEGER;
                    """)
        }
        // With clients kept apart, a job belongs to the client that submitted it.
        migrator.registerMigration("v3-clients") { db in
            try db.execute(
                sql: """
                    ALTER TABLE jobs ADD COLUMN client TEXT;
                    CREATE INDEX jobs_by_client ON jobs(client, status) WHERE client IS NOT NULL;
                    """)
        }
        return migrator
    }

    // MARK: Clients

    /// Queues a validated batch, or finds the job its idempotency key already names.
    ///
    /// - Parameters:
    ///   - body: the request body, decoded again and run by whichever process claims the job.
    ///   - maximumPending: the most jobs queued or running at once.
    ///   - id: the new job's id (see ``newJobID()``); a fresh one when omitted.
    ///   - pinnedTo: the only responder that may run the job, for one that needs what only that
    ///     process holds; `nil` lets any run it.
    ///   - client: the client the job belongs to, when clients are kept apart: its idempotency
    ///     key is its own, and only it sees the job (see ``job(_:now:client:)``).
    ///   - maximumPendingForClient: the most jobs queued or running for `client`.
    public func submit(
        body: [UInt8], taskCount: Int, idempotencyKey: String?, maximumPending: Int, now: Double,
        id: String = JobStore.newJobID(), pinnedTo: Owner? = nil, client: String? = nil,
        maximumPendingForClient: Int = .max
    ) async throws -> Submission {
        // One key column for all: a client's keys are stored prefixed with its id (ids have no
        // newline), so that two clients' equal keys never meet.
        let idempotencyKey = idempotencyKey.map { key in client.map { "\($0)\n\(key)" } ?? key }
        return try await submissions.write(
            SubmitRequest(
                id: id, body: body, hash: Self.hash(body), taskCount: taskCount, idempotencyKey: idempotencyKey,
                maximumPending: maximumPending, now: now, pinnedTo: pinnedTo, client: client,
                maximumPendingForClient: maximumPendingForClient))
    }

    /// How many transactions submissions have been committed in (fewer than submissions when
    /// they arrive together).
    var submissionCommits: Int { submissions.commits }

    /// One submission, as ``submit(body:taskCount:idempotencyKey:maximumPending:now:id:pinnedTo:client:maximumPendingForClient:)`` received it.
    struct SubmitRequest: Sendable {
        let id: String
        let body: [UInt8]
        let hash: String
        let taskCount: Int
        let idempotencyKey: String?
        let maximumPending: Int
        let now: Double
        let pinnedTo: Owner?
        let client: String?
        let maximumPendingForClient: Int
    }

    /// Submissions made together share one transaction (``GroupCommit``): each is checked and
    /// inserted in turn, seeing those before it, and all are answered after the one commit.
    private static func groupCommit(_ pool: DatabasePool) -> GroupCommit<SubmitRequest, Submission> {
        GroupCommit { requests in
            try await pool.write { db in
                var counts = PendingCounts()
                return try requests.map { try insert($0, db, &counts) }
            }
        }
    }

    /// Jobs queued or running, counted once per group and then kept up to date as the group's
    /// submissions are inserted: a count walks every pending job, and a backlog can be long.
    private struct PendingCounts {
        var all: Int?
        var byClient: [String: Int] = [:]
    }

    private static func insert(_ request: SubmitRequest, _ db: Database, _ counts: inout PendingCounts) throws
        -> Submission
    {
        if let idempotencyKey = request.idempotencyKey {
            if let row = try Row.fetchOne(
                db, sql: "SELECT * FROM jobs WHERE idempotency_key = ? AND \(Self.live)",
                arguments: [idempotencyKey, request.now])
            {
                return (row["body_hash"] as String?) == request.hash ? .replayed(Self.job(row)) : .keyReused
            }
            // An expired job keeps its key until the sweep removes it: free the key now.
            try db.execute(sql: "DELETE FROM jobs WHERE idempotency_key = ?", arguments: [idempotencyKey])
        }
        let pending =
            try counts.all
            ?? Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')") ?? 0
        counts.all = pending
        guard pending < request.maximumPending else { return .full }
        if let client = request.client, request.maximumPendingForClient < .max {
            let mine =
                try counts.byClient[client]
                ?? Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM jobs WHERE client = ? AND status IN ('queued', 'running')",
                    arguments: [client]) ?? 0
            counts.byClient[client] = mine
            guard mine < request.maximumPendingForClient else { return .clientFull }
        }
        try db.execute(
            sql: """
                INSERT INTO jobs (
                    id, status, body, body_hash, idempotency_key, task_count, created_at, pinned_owner, pinned_pid,
                    client)
                VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                request.id, Data(request.body), request.hash, request.idempotencyKey, request.taskCount, request.now,
                request.pinnedTo?.token, request.pinnedTo?.pid, request.client,
            ])
        counts.all = pending + 1
        if let client = request.client, let mine = counts.byClient[client] { counts.byClient[client] = mine + 1 }
        return .created(
            Job(
                id: request.id, status: .queued, taskCount: request.taskCount, progress: .init(),
                createdAt: request.now, cancelRequested: false))
    }

    /// The job `id`, unless unknown or expired, or (when `client` is given) another client's.
    public func job(_ id: String, now: Double, client: String? = nil) async throws -> Job? {
        try await pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM jobs WHERE id = ? AND \(Self.live) AND \(Self.ownedBy(client))",
                arguments: Self.arguments([id, now], client)
            ).map(Self.job)
        }
    }

    /// Matches every job (`client` nil: clients are not kept apart) or only `client`'s.
    private static func ownedBy(_ client: String?) -> String {
        client == nil ? "1" : "client = ?"
    }

    private static func arguments(_ values: [(any DatabaseValueConvertible)?], _ client: String?) -> StatementArguments {
        StatementArguments(values + (client.map { [$0] } ?? []))
    }

    /// What a cancellation request found.
    public enum CancelOutcome: Sendable {
        /// No such job (or it expired).
        case notFound
        /// It had already finished; nothing changed.
        case finished(Job)
        /// It was queued and is now cancelled.
        case cancelled(Job)
        /// It is running: its owner will stop it.
        case requested(Job)
    }

    /// Cancels a queued job at once, or flags a running one for its owner to stop.
    ///
    /// - Parameter cancelledResults: every task of a job's batch reported cancelled, for a job that
    ///   never started.
    public func cancel(
        _ id: String, now: Double, retention: Double, client: String? = nil,
        cancelledResults: @Sendable ([UInt8]) -> BatchResult?
    ) async throws -> CancelOutcome {
        try await pool.write { db -> CancelOutcome in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT * FROM jobs WHERE id = ? AND \(Self.live) AND \(Self.ownedBy(client))",
                    arguments: Self.arguments([id, now], client))
            else { return .notFound }
            let job = Self.job(row)
            switch job.status {
            case .queued:
                let outcome = cancelledResults(Array(row["body"] as Data)).map(Outcome.init) ?? Outcome(counts: .init())
                try Self.finish(
                    db, id: id, status: .cancelled, outcome: outcome, error: nil, now: now, retention: retention)
                return .cancelled(try Self.fetch(db, id)!)
            case .running:
                try db.execute(sql: "UPDATE jobs SET cancel_requested = 1 WHERE id = ?", arguments: [id])
                return .requested(try Self.fetch(db, id)!)
            case .succeeded, .partial, .failed, .cancelled:
                return .finished(job)
            }
        }
    }

    // MARK: Runners

    /// Claims the oldest queued job for `owner`, if there is one.
    public func claimNext(owner: Owner, now: Double) async throws -> Claim? {
        // Every process polls; a read (which in WAL mode waits for no one) spares idle ones the
        // write lock.
        let anyQueued = try await pool.read { db in
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued' AND \(Self.claimable))",
                arguments: [owner.token]) ?? false
        }
        guard anyQueued else { return nil }
        return try await pool.write { db in
            try Row.fetchOne(
                db,
                sql: """
                    UPDATE jobs SET status = 'running', started_at = ?, heartbeat_at = ?, owner = ?, owner_pid = ?,
                        claims = claims + 1
                    WHERE id = (
                        SELECT id FROM jobs WHERE status = 'queued' AND \(Self.claimable) ORDER BY created_at LIMIT 1)
                    RETURNING id, body, pinned_owner
                    """,
                arguments: [now, now, owner.token, owner.pid, owner.token]
            ).map { Claim(id: $0["id"], body: Array($0["body"] as Data), isPinned: ($0["pinned_owner"] as String?) != nil) }
        }
    }

    /// Marks `owner`'s running jobs alive and returns those a `DELETE` asked to stop.
    public func heartbeat(owner: Owner, now: Double) async throws -> Set<String> {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE jobs SET heartbeat_at = ? WHERE owner = ? AND status = 'running'",
                arguments: [now, owner.token])
            return Set(
                try String.fetchAll(
                    db, sql: "SELECT id FROM jobs WHERE owner = ? AND status = 'running' AND cancel_requested = 1",
                    arguments: [owner.token]))
        }
    }

    /// Records how many tasks of a running job have finished, for `GET` to show.
    public func recordProgress(_ id: String, owner: Owner, progress: BatchResult.Summary) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE jobs SET succeeded = ?, failed = ?, skipped = ?, cancelled = ?
                    WHERE id = ? AND owner = ? AND status = 'running'
                    """,
                arguments: [
                    progress.succeeded, progress.failed, progress.skipped, progress.cancelled, id, owner.token,
                ])
        }
    }

    /// Stores the outcome of a job `owner` ran; does nothing if the job is no longer its own (it
    /// was declared interrupted meanwhile).
    public func finish(
        _ id: String, owner: Owner, status: JobStatus, outcome: Outcome, error: TaskError?, now: Double,
        retention: Double
    ) async throws {
        try await pool.write { db in
            let mine = try Bool.fetchOne(
                db, sql: "SELECT 1 FROM jobs WHERE id = ? AND owner = ? AND status = 'running'",
                arguments: [id, owner.token])
            guard mine == true else { return }
            try Self.finish(
                db, id: id, status: status, outcome: outcome, error: error, now: now, retention: retention)
        }
    }

    /// Ends every running job whose responder is gone: its process no longer exists, or it has not
    /// sent a heartbeat since `staleBefore`. Each is reported `failed`, its tasks `cancelled`, with
    /// the code `interrupted`: its tasks may have partly run, so it is not run again. Queued jobs
    /// pinned to a responder that is gone fail with `credentials_unavailable`.
    ///
    /// - Returns: the ids of the jobs ended.
    public func recoverAbandoned(
        staleBefore: Double, now: Double, retention: Double, isAlive: @Sendable (_ pid: Int32, _ owner: String) -> Bool,
        interruptedResults: @Sendable ([UInt8], TaskError) -> BatchResult?
    ) async throws -> [String] {
        try await pool.write { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT id, body, owner, owner_pid, heartbeat_at FROM jobs WHERE status = 'running'")
            var ended: [String] = []
            // Queued jobs pinned to a responder that is gone can never run: what they needed left
            // with it.
            let orphans = try Row.fetchAll(
                db,
                sql: "SELECT id, body, pinned_owner, pinned_pid FROM jobs WHERE status = 'queued' AND pinned_owner IS NOT NULL")
            // Each ended job: failed, its tasks cancelled with the same error.
            func end(_ row: Row, _ error: TaskError) throws {
                let outcome =
                    interruptedResults(Array(row["body"] as Data), error).map(Outcome.init) ?? Outcome(counts: .init())
                let id: String = row["id"]
                try Self.finish(
                    db, id: id, status: .failed, outcome: outcome, error: error, now: now, retention: retention)
                ended.append(id)
            }
            for row in orphans where !isAlive(row["pinned_pid"] ?? 0, row["pinned_owner"] ?? "") {
                try end(
                    row,
                    TaskError(
                        code: "credentials_unavailable",
                        message: "the job forwards request headers to an upstream; they were kept only in the memory "
                            + "of the responder that accepted the job, which stopped before running it: submit it again"))
            }
            for row in rows {
                let pid: Int32 = row["owner_pid"] ?? 0
                let heartbeat: Double = row["heartbeat_at"] ?? 0
                guard heartbeat < staleBefore || !isAlive(pid, row["owner"] ?? "") else { continue }
                try end(
                    row,
                    TaskError(code: "interrupted", message: "the responder running this job stopped before it finished"))
            }
            return ended
        }
    }

    /// Removes finished jobs past their retention time.
    ///
    /// - Returns: how many were removed.
    public func sweep(now: Double) async throws -> Int {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ?", arguments: [now])
            return db.changesCount
        }
    }

    /// How many times the job was claimed: 1 for a job that ran, as every job should.
    func claims(_ id: String) async throws -> Int? {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT claims FROM jobs WHERE id = ?", arguments: [id]) }
    }

    // MARK: Internals

    /// Not expired (bind `now`).
    private static let live = "(expires_at IS NULL OR expires_at > ?)"
    /// Runnable by an owner (bind its token): not pinned to another.
    private static let claimable = "(pinned_owner IS NULL OR pinned_owner = ?)"

    /// A fresh job id: 128 random bits in lowercase hex.
    public static func newJobID() -> String {
        randomHex(bytes: 16)
    }

    private static func finish(
        _ db: Database, id: String, status: JobStatus, outcome: Outcome, error: TaskError?, now: Double,
        retention: Double
    ) throws {
        let counts = outcome.counts
        try db.execute(
            sql: """
                UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?, results = ?, summary = ?,
                    succeeded = ?, failed = ?, skipped = ?, cancelled = ?, error_code = ?, error_message = ?,
                    body = x''
                WHERE id = ?
                """,
            arguments: [
                status.rawValue, now, now + retention, outcome.results.map { Data($0) },
                outcome.summary.map { Data($0) }, counts.succeeded, counts.failed, counts.skipped, counts.cancelled,
                error?.code, error?.message, id,
            ])
    }

    private static func fetch(_ db: Database, _ id: String) throws -> Job? {
        try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]).map(job)
    }

    private static func job(_ row: Row) -> Job {
        var progress = BatchResult.Summary()
        progress.succeeded = row["succeeded"]
        progress.failed = row["failed"]
        progress.skipped = row["skipped"]
        progress.cancelled = row["cancelled"]
        let errorCode: String? = row["error_code"]
        return Job(
            id: row["id"],
            status: JobStatus(rawValue: row["status"]) ?? .failed,
            taskCount: row["task_count"],
            progress: progress,
            createdAt: row["created_at"],
            startedAt: row["started_at"],
            finishedAt: row["finished_at"],
            expiresAt: row["expires_at"],
            cancelRequested: row["cancel_requested"] as Bool,
            results: (row["results"] as Data?).map { Array($0) },
            summary: (row["summary"] as Data?).map { Array($0) },
            error: errorCode.map { TaskError(code: $0, message: row["error_message"] ?? "") })
    }

    static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        var text = ""
        for _ in 0..<count {
            let byte = UInt8.random(in: 0...255, using: &generator)
            text += String(byte >> 4, radix: 16) + String(byte & 0x0F, radix: 16)
        }
        return text
    }

    private static func hash(_ body: [UInt8]) -> String {
        SHA256.hash(data: body).map { String($0 >> 4, radix: 16) + String($0 & 0x0F, radix: 16) }.joined()
    }
}
