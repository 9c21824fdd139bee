import FanoutEngine
import Foundation
import GRDB
import NIOConcurrencyHelpers

/// Asynchronous batches in SQLite (WAL mode), shared by every responder process on one host that
/// opens the same data directory.
///
/// Every change is one SQL statement or one immediate transaction, so processes never see a
/// half-made change: a job is claimed by exactly one of them (`UPDATE … RETURNING` on a queued
/// row), and an idempotency key maps to one job. Submissions that arrive together share one
/// transaction and one flush to disk (``GroupCommit``), each answered after that commit. GRDB
/// runs the blocking SQLite calls on its own dispatch queues; callers only suspend.
public final class SQLiteJobStore: JobStore {
    private let pool: DatabasePool
    private let submissions: GroupCommit<SubmitRequest, Submission>
    /// The database file.
    public let path: String
    public var location: String { path }

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
        // The id of the request that submitted the job, for the job document and its calls.
        migrator.registerMigration("v4-request-ids") { db in
            try db.execute(sql: "ALTER TABLE jobs ADD COLUMN request_id TEXT")
        }
        return migrator
    }

    // MARK: Responders

    /// The owners attached in this process: a job owned by this PID with another token belongs
    /// to an earlier process that had the same PID (a restarted container, say).
    private static let liveOwners = NIOLockedValueBox<Set<String>>([])

    public func attach(_ owner: Owner, events: JobStoreEvents) async throws {
        _ = Self.liveOwners.withLockedValue { $0.insert(owner.token) }
    }

    public func detach(_ owner: Owner) async {
        _ = Self.liveOwners.withLockedValue { $0.remove(owner.token) }
    }

    /// Nothing to release: GRDB closes the database when the store goes away.
    public func close() async {}

    // MARK: Clients

    public func submit(
        body: [UInt8], taskCount: Int, idempotencyKey: String?, maximumPending: Int, now: Double, id: String,
        pinnedTo: Owner?, client: String?, maximumPendingForClient: Int, startedBy: Owner?, requestID: String?
    ) async throws -> Submission {
        // One key column for all: a client's keys are stored prefixed with its id (ids have no
        // newline), so that two clients' equal keys never meet.
        let idempotencyKey = idempotencyKey.map { key in client.map { "\($0)\n\(key)" } ?? key }
        return try await submissions.write(
            SubmitRequest(
                id: id, body: body, hash: Job.bodyHash(body), taskCount: taskCount, idempotencyKey: idempotencyKey,
                maximumPending: maximumPending, now: now, pinnedTo: pinnedTo, client: client,
                maximumPendingForClient: maximumPendingForClient, startedBy: startedBy, requestID: requestID))
    }

    /// How many transactions submissions have been committed in (fewer than submissions when
    /// they arrive together).
    public var submissionCommits: Int { submissions.commits }

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
        let starter = request.startedBy
        try db.execute(
            sql: """
                INSERT INTO jobs (
                    id, status, body, body_hash, idempotency_key, task_count, created_at, pinned_owner, pinned_pid,
                    client, started_at, heartbeat_at, owner, owner_pid, claims, request_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                request.id, starter == nil ? "queued" : "running", Data(request.body), request.hash,
                request.idempotencyKey, request.taskCount, request.now, request.pinnedTo?.token, request.pinnedTo?.pid,
                request.client, starter.map { _ in request.now }, starter.map { _ in request.now }, starter?.token,
                starter?.pid, starter == nil ? 0 : 1, request.requestID,
            ])
        counts.all = pending + 1
        if let client = request.client, let mine = counts.byClient[client] { counts.byClient[client] = mine + 1 }
        return .created(request.newJob)
    }

    public func job(_ id: String, now: Double, client: String?) async throws -> Job? {
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

    public func cancel(
        _ id: String, now: Double, retention: Double, client: String?,
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

    public func claim(owner: Owner, limit: Int, now: Double) async throws -> [Claim] {
        guard limit > 0 else { return [] }
        // Every process polls; a read (which in WAL mode waits for no one) spares idle ones the
        // write lock.
        let anyQueued = try await pool.read { db in
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued' AND \(Self.claimable))",
                arguments: [owner.token]) ?? false
        }
        guard anyQueued else { return [] }
        return try await pool.write { db in
            try Row.fetchAll(
                db,
                sql: """
                    UPDATE jobs SET status = 'running', started_at = ?, heartbeat_at = ?, owner = ?, owner_pid = ?,
                        claims = claims + 1
                    WHERE id IN (
                        SELECT id FROM jobs WHERE status = 'queued' AND \(Self.claimable) ORDER BY created_at LIMIT ?)
                    RETURNING id, body, pinned_owner, created_at, request_id
                    """,
                arguments: [now, now, owner.token, owner.pid, owner.token, limit]
            )
            .sorted { ($0["created_at"] as Double) < ($1["created_at"] as Double) }
            .map {
                Claim(
                    id: $0["id"], body: Array($0["body"] as Data), isPinned: ($0["pinned_owner"] as String?) != nil,
                    requestID: $0["request_id"])
            }
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

    /// Responders are processes of this host: one is gone when its process no longer exists (or,
    /// with this process's PID, when its token is not attached here), or silent for `staleAfter`.
    public func recoverAbandoned(
        now: Double, staleAfter: Double, retention: Double,
        interruptedResults: @Sendable ([UInt8], TaskError) -> BatchResult?
    ) async throws -> [String] {
        let pid = getpid()
        return try await recoverAbandoned(
            staleBefore: now - staleAfter, now: now, retention: retention,
            isAlive: { owner, token in
                if owner == pid { return Self.liveOwners.withLockedValue { $0.contains(token) } }
                return kill(owner, 0) == 0 || errno == EPERM
            },
            interruptedResults: interruptedResults)
    }

    /// Ends the running jobs of responders `isAlive` denies or that were silent since `staleBefore`.
    func recoverAbandoned(
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
                try end(row, .credentialsUnavailable)
            }
            for row in rows {
                let pid: Int32 = row["owner_pid"] ?? 0
                let heartbeat: Double = row["heartbeat_at"] ?? 0
                guard heartbeat < staleBefore || !isAlive(pid, row["owner"] ?? "") else { continue }
                try end(row, .interrupted)
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

    /// How many jobs wait to be claimed.
    public func queuedCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE status = 'queued'") ?? 0 }
    }

    /// How many times the job was claimed: 1 for a job that ran, as every job should.
    public func claims(_ id: String) async throws -> Int? {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT claims FROM jobs WHERE id = ?", arguments: [id]) }
    }

    // MARK: Internals

    /// Not expired (bind `now`).
    private static let live = "(expires_at IS NULL OR expires_at > ?)"
    /// Runnable by an owner (bind its token): not pinned to another.
    private static let claimable = "(pinned_owner IS NULL OR pinned_owner = ?)"

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
            error: errorCode.map { TaskError(code: $0, message: row["error_message"] ?? "") },
            requestID: row["request_id"])
    }
}
