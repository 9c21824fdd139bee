import FanoutEngine
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// Asynchronous batches in PostgreSQL, shared by the responders of many hosts.
///
/// - Claims take queued rows with `FOR UPDATE SKIP LOCKED` inside a CTE that fences the `LIMIT`,
///   and only as many as the claimer has free slots; a claim also requires the claimer to be a
///   registered, live host, so one declared dead cannot take work.
/// - Liveness: each attached owner holds a session advisory lock on a connection of its own and
///   heartbeats on it with the database's clock. PostgreSQL releases the lock the moment that
///   connection ends (the process died, or its network did), and any other host sees it at its
///   next look (``recoverAbandoned(now:staleAfter:retention:interruptedResults:)``, twice a
///   second); a host whose lock is held but whose heartbeat is older than `staleAfter` counts as
///   gone too (hung, or cut off with its connection half-open).
/// - Fencing: every write about a running job checks that the job is still running under the
///   writer's token; an owner that finds its host row gone, or cannot heartbeat in time, learns
///   it lost its liveness (``JobStoreEvents/ownershipLost``) and stops its jobs.
/// - Wake-ups: `NOTIFY` on one channel, sent after a commit (never inside the insert
///   transaction, where it would serialize every insert on the notification queue's lock) and at
///   most once per 5 ms per host; polling remains the fallback. Cancellations are announced the
///   same way, so a job running on another host stops within milliseconds.
/// - Submissions that arrive together share one transaction, one flush (``GroupCommit``) and, for
///   those without an idempotency key, one multi-row `INSERT`.
public final class PostgresJobStore: JobStore {
    /// The `NOTIFY` channel: payload `w` for work queued, `c` + id for a cancellation.
    static let channel = "fanout_jobs"
    /// The first key of every advisory lock Fanout takes ("FAN"); the second is the host's.
    static let lockNamespace = 0x46_41_4E
    /// Schema migrations, applied in order, each once.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE fanout_jobs (
                id text PRIMARY KEY,
                status text NOT NULL,
                body bytea NOT NULL,
                body_hash text NOT NULL,
                idempotency_key text UNIQUE,
                task_count integer NOT NULL,
                created_at double precision NOT NULL,
                started_at double precision,
                finished_at double precision,
                expires_at double precision,
                owner text,
                claims integer NOT NULL DEFAULT 0,
                cancel_requested boolean NOT NULL DEFAULT false,
                succeeded integer NOT NULL DEFAULT 0,
                failed integer NOT NULL DEFAULT 0,
                skipped integer NOT NULL DEFAULT 0,
                cancelled integer NOT NULL DEFAULT 0,
                results bytea,
                summary bytea,
                error_code text,
                error_message text,
                pinned_owner text,
                client text
            ) WITH (
                -- Room on each page for updated rows (progress, claim, finish), and vacuum that
                -- keeps up with a queue's churn rather than waiting for 20% of the table to die.
                fillfactor = 70,
                autovacuum_vacuum_scale_factor = 0.02,
                autovacuum_vacuum_threshold = 1000,
                autovacuum_vacuum_insert_scale_factor = 0.05,
                autovacuum_vacuum_cost_delay = 1
            )
            """,
            "CREATE INDEX fanout_jobs_queued ON fanout_jobs (created_at) WHERE status = 'queued'",
            "CREATE INDEX fanout_jobs_running ON fanout_jobs (owner) WHERE status = 'running'",
            "CREATE INDEX fanout_jobs_pinned ON fanout_jobs (pinned_owner) WHERE status = 'queued' AND pinned_owner IS NOT NULL",
            "CREATE INDEX fanout_jobs_expiry ON fanout_jobs (expires_at) WHERE expires_at IS NOT NULL",
            "CREATE INDEX fanout_jobs_client ON fanout_jobs (client, status) WHERE client IS NOT NULL",
            """
            CREATE TABLE fanout_hosts (
                token text PRIMARY KEY,
                lock_key integer NOT NULL UNIQUE,
                pid integer NOT NULL,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """,
            "CREATE SEQUENCE fanout_host_keys AS integer MINVALUE 1 CYCLE",
        ],
        // The id of the request that submitted the job, for the job document and its calls.
        ["ALTER TABLE fanout_jobs ADD COLUMN request_id text"],
    ]

    private struct Attachment {
        var events: JobStoreEvents
        var stopping = false
        var task: Task<Void, Never>?
    }

    private struct State {
        var attachments: [String: Attachment] = [:]
        /// When `NOTIFY` last went out for work, and whether one is due after the current window.
        var lastWorkNotice: ContinuousClock.Instant?
        var workNoticeScheduled = false
        /// Jobs counted queued or running at `pendingCountedAt`, plus those inserted since.
        var knownPending = 0
        var pendingCountedAt: ContinuousClock.Instant?
        var closed = false
    }

    public let location: String
    /// The database, as given.
    public let url: DatabaseURL
    private let client: PostgresClient
    private let clientTask: Task<Void, Never>
    private let listenerTask = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let logger: Logger
    private let state = NIOLockedValueBox(State())
    private let submissions: NIOLockedValueBox<GroupCommit<SubmitRequest, Submission>?> = .init(nil)
    private let finishes: NIOLockedValueBox<GroupCommit<FinishRequest, Void>?> = .init(nil)
    /// How often an attached owner heartbeats, and how long it may take at most.
    let heartbeatInterval: Duration
    let heartbeatTimeout: Duration

    /// Connects, brings the schema up to date (one host at a time), and starts listening.
    ///
    /// - Parameters:
    ///   - url: the database.
    ///   - maximumConnections: the most connections to open, two of them held for the liveness
    ///     lock and for listening.
    /// - Throws: when the database cannot be reached or migrated.
    public init(
        url: DatabaseURL, maximumConnections: Int = 10, heartbeatInterval: Duration = .milliseconds(500),
        heartbeatTimeout: Duration = .seconds(3), logger: Logger
    ) async throws {
        var configuration = url.configuration
        configuration.options.maximumConnections = max(3, maximumConnections)
        configuration.options.minimumConnections = 0
        // The pool's own chatter (connection attempts, leases before `run()` began) stays out of
        // the log; what matters reaches it as this store's errors.
        var poolLogger = logger
        poolLogger.logLevel = max(logger.logLevel, .error)
        client = PostgresClient(configuration: configuration, backgroundLogger: poolLogger)
        let client = client
        // The pool works only while `run()` does; it returns when the store is closed.
        clientTask = Task { await client.run() }
        location = url.description
        self.url = url
        self.logger = logger
        self.heartbeatInterval = heartbeatInterval
        self.heartbeatTimeout = heartbeatTimeout
        do {
            try await migrate()
        } catch {
            clientTask.cancel()
            throw error
        }
        submissions.withLockedValue { $0 = GroupCommit { [unowned self] in try await self.insert($0) } }
        finishes.withLockedValue { $0 = GroupCommit { [unowned self] in try await self.finish($0) } }
        listenerTask.withLockedValue { $0 = Task { await self.listen() } }
    }

    /// The schema's version after migration.
    static var schemaVersion: Int { migrations.count }

    private func migrate() async throws {
        try await client.withTransaction(logger: logger) { connection in
            // Hosts starting together take turns; each sees the others' migrations done.
            try await connection.query(
                "SELECT pg_advisory_xact_lock(\(Self.lockNamespace)::integer, 0)", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS fanout_schema (version integer NOT NULL)", logger: logger)
            var version = 0
            for try await value in try await connection.query("SELECT version FROM fanout_schema", logger: logger)
                .decode(Int.self)
            {
                version = value
            }
            guard version < Self.migrations.count else { return }
            for migration in Self.migrations.dropFirst(version) {
                for statement in migration {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
            }
            try await connection.query("DELETE FROM fanout_schema", logger: logger)
            try await connection.query(
                "INSERT INTO fanout_schema (version) VALUES (\(Self.migrations.count))", logger: logger)
        }
    }

    public func close() async {
        let tasks = state.withLockedValue { state -> [Task<Void, Never>] in
            state.closed = true
            for key in state.attachments.keys { state.attachments[key]?.stopping = true }
            return state.attachments.values.compactMap(\.task)
        }
        for task in tasks { await task.value }
        if let listener = listenerTask.withLockedValue({ $0 }) {
            listener.cancel()
            await listener.value
        }
        clientTask.cancel()
        await clientTask.value
    }

    // MARK: Responders

    public func attach(_ owner: Owner, events: JobStoreEvents) async throws {
        try await withCheckedThrowingContinuation { (registered: CheckedContinuation<Void, any Error>) in
            // Recorded before the task starts: it ends at once if it finds no attachment.
            state.withLockedValue { $0.attachments[owner.token] = Attachment(events: events) }
            let task = Task { await self.hold(owner, registered: registered) }
            state.withLockedValue { $0.attachments[owner.token]?.task = task }
        }
    }

    public func detach(_ owner: Owner) async {
        let task = state.withLockedValue { state -> Task<Void, Never>? in
            state.attachments[owner.token]?.stopping = true
            return state.attachments[owner.token]?.task
        }
        await task?.value
    }

    /// Holds `owner`'s liveness on a connection of its own until detached or lost: takes a fresh
    /// advisory lock key, locks it, registers the host row, then heartbeats.
    private func hold(_ owner: Owner, registered: CheckedContinuation<Void, any Error>) async {
        var announced = false
        do {
            try await client.withConnection { connection in
                var key = 0
                for try await value in try await connection.query(
                    "SELECT nextval('fanout_host_keys')::integer", logger: logger
                ).decode(Int.self) {
                    key = value
                }
                // Taken before the row exists, so that no other host ever sees the row unlocked.
                try await connection.query(
                    "SELECT pg_advisory_lock(\(Self.lockNamespace)::integer, \(key)::integer)", logger: logger)
                do {
                    try await connection.query(
                        "INSERT INTO fanout_hosts (token, lock_key, pid) VALUES (\(owner.token), \(key), \(Int(owner.pid)))",
                        logger: logger)
                    registered.resume()
                    announced = true
                    try await heartbeat(owner, on: connection)
                } catch {
                    // Back to the pool without the lock, whatever happened.
                    if !connection.isClosed {
                        _ = try? await Self.within(heartbeatTimeout) { [logger] in
                            try await connection.query("SELECT pg_advisory_unlock_all()", logger: logger)
                        }
                    }
                    throw error
                }
                _ = try? await connection.query("DELETE FROM fanout_hosts WHERE token = \(owner.token)", logger: logger)
                try await connection.query("SELECT pg_advisory_unlock_all()", logger: logger)
            }
        } catch {
            if !announced {
                registered.resume(throwing: error)
            } else if !isStopping(owner) {
                logger.error("lost the job store liveness lock", metadata: ["error": "\(error)"])
            }
        }
        let events = state.withLockedValue { $0.attachments.removeValue(forKey: owner.token) }
        if announced, let events, !events.stopping { events.events.ownershipLost() }
    }

    /// Heartbeats until detached; throws when a heartbeat fails, is late past `heartbeatTimeout`,
    /// or finds the host row gone (the others declared this owner dead).
    private func heartbeat(_ owner: Owner, on connection: PostgresConnection) async throws {
        let clock = ContinuousClock()
        var next = clock.now + heartbeatInterval
        while !isStopping(owner) {
            if clock.now < next {
                try? await Task.sleep(for: min(.milliseconds(50), next - clock.now))
                continue
            }
            next = clock.now + heartbeatInterval
            // A query on a connection the server closed never returns (postgres-nio 1.33): look
            // first, and bound the wait in any case.
            guard !connection.isClosed else { throw JobStoreError.connectionClosed }
            let found = try await Self.within(heartbeatTimeout) { [logger] in
                var found = false
                for try await _ in try await connection.query(
                    "UPDATE fanout_hosts SET heartbeat_at = clock_timestamp() WHERE token = \(owner.token) RETURNING 1",
                    logger: logger
                ) {
                    found = true
                }
                return found
            }
            guard found else { throw JobStoreError.declaredDead }
        }
    }

    /// `operation`'s result, or ``JobStoreError/heartbeatLate`` once `limit` has passed (the
    /// operation is then left to end, or not, on its own).
    private static func within<T: Sendable>(
        _ limit: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let outcome = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
        let timer = NIOLockedValueBox<DeadlineScheduler.Timer?>(nil)
        return try await withCheckedThrowingContinuation { continuation in
            outcome.withLockedValue { $0 = continuation }
            let work = Task {
                let result: Result<T, any Error>
                do {
                    result = .success(try await operation())
                } catch {
                    result = .failure(error)
                }
                guard let continuation = outcome.withLockedValue({ $0.take() }) else { return }
                // In time: the timer has nothing left to do (twice a second per host otherwise).
                if let pending = timer.withLockedValue({ $0 }) { DeadlineScheduler.shared.cancel(pending) }
                continuation.resume(with: result)
            }
            let scheduled = DeadlineScheduler.shared.schedule(at: .now + limit) {
                guard let continuation = outcome.withLockedValue({ $0.take() }) else { return }
                work.cancel()
                continuation.resume(throwing: JobStoreError.heartbeatLate)
            }
            timer.withLockedValue { $0 = scheduled }
        }
    }

    private func isStopping(_ owner: Owner) -> Bool {
        state.withLockedValue { $0.closed || $0.attachments[owner.token]?.stopping ?? true }
    }

    /// Listens for work and cancellations made elsewhere, reconnecting after a failure.
    private func listen() async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        for try await notification in notifications {
                            let events = state.withLockedValue { $0.attachments.values.map(\.events) }
                            if notification.payload.hasPrefix("c") {
                                let id = String(notification.payload.dropFirst())
                                for event in events { event.cancelRequested(id) }
                            } else {
                                for event in events { event.workQueued() }
                            }
                        }
                    }
                }
            } catch where !Task.isCancelled {
                logger.warning("job store notifications lost; polling until they are back", metadata: ["error": "\(error)"])
            } catch {}
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Tells the other hosts that work was queued: at once, or at the end of the current 5 ms
    /// window when one went out less than that ago.
    private func announceWork() {
        let window = Duration.milliseconds(5)
        let clock = ContinuousClock()
        let delay = state.withLockedValue { state -> Duration? in
            let now = clock.now
            if let last = state.lastWorkNotice, now - last < window {
                guard !state.workNoticeScheduled else { return nil }
                state.workNoticeScheduled = true
                return window - (now - last)
            }
            state.lastWorkNotice = now
            return .zero
        }
        guard let delay else { return }
        if delay == .zero {
            Task { try? await notify("w") }
            return
        }
        _ = DeadlineScheduler.shared.schedule(at: clock.now + delay) { [weak self] in
            guard let self else { return }
            self.state.withLockedValue {
                $0.workNoticeScheduled = false
                $0.lastWorkNotice = clock.now
            }
            Task { try? await self.notify("w") }
        }
    }

    private func notify(_ payload: String) async throws {
        try await client.query("SELECT pg_notify(\(Self.channel), \(payload))", logger: logger)
    }

    // MARK: Clients

    public func submit(
        body: [UInt8], taskCount: Int, idempotencyKey: String?, maximumPending: Int, now: Double, id: String,
        pinnedTo: Owner?, client: String?, maximumPendingForClient: Int, startedBy: Owner?, requestID: String?
    ) async throws -> Submission {
        let idempotencyKey = idempotencyKey.map { key in client.map { "\($0)\n\(key)" } ?? key }
        guard let submissions = submissions.withLockedValue({ $0 }) else { throw JobStoreError.closed }
        let submission = try await submissions.write(
            SubmitRequest(
                id: id, body: body, hash: Job.bodyHash(body), taskCount: taskCount, idempotencyKey: idempotencyKey,
                maximumPending: maximumPending, now: now, pinnedTo: pinnedTo, client: client,
                maximumPendingForClient: maximumPendingForClient, startedBy: startedBy, requestID: requestID))
        // A job this host starts itself needs no other host.
        if case .created(let job) = submission, job.status == .queued { announceWork() }
        return submission
    }

    /// How many transactions submissions have been committed in.
    public var submissionCommits: Int { submissions.withLockedValue { $0?.commits ?? 0 } }

    /// One group of submissions, in one transaction: those with an idempotency key one by one (a
    /// key may name a job, or be taken by another host meanwhile), the others in one `INSERT`.
    private func insert(_ requests: [SubmitRequest]) async throws -> [Submission] {
        let clock = ContinuousClock()
        // Counting pending jobs walks them all: it is done when the count known from a recent
        // group could be near a limit, not for every group.
        let (known, countedAt) = state.withLockedValue { ($0.knownPending, $0.pendingCountedAt) }
        let maximum = requests.map(\.maximumPending).min() ?? .max
        let mustCount =
            countedAt.map { clock.now - $0 > .seconds(1) } ?? true || known + requests.count * 2 >= maximum / 2
        return try await client.withTransaction(logger: logger) { connection in
            var pending = known
            if mustCount {
                pending = 0
                for try await count in try await connection.query(
                    "SELECT count(*)::bigint FROM fanout_jobs WHERE status IN ('queued', 'running')", logger: logger
                ).decode(Int.self) {
                    pending = count
                }
                state.withLockedValue { $0.pendingCountedAt = clock.now }
            }
            var byClient: [String: Int] = [:]
            var outcomes: [Submission] = []
            var batch = Insertion()
            for request in requests {
                if let key = request.idempotencyKey {
                    if let existing = try await existingJob(key: key, request: request, connection) {
                        outcomes.append(existing)
                        continue
                    }
                }
                guard pending < request.maximumPending else {
                    outcomes.append(.full)
                    continue
                }
                if let client = request.client, request.maximumPendingForClient < .max {
                    var mine = byClient[client] ?? -1
                    if mine < 0 {
                        mine = 0
                        for try await count in try await connection.query(
                            """
                            SELECT count(*)::bigint FROM fanout_jobs
                            WHERE client = \(client) AND status IN ('queued', 'running')
                            """, logger: logger
                        ).decode(Int.self) {
                            mine = count
                        }
                    }
                    guard mine < request.maximumPendingForClient else {
                        byClient[client] = mine
                        outcomes.append(.clientFull)
                        continue
                    }
                    byClient[client] = mine + 1
                }
                if let key = request.idempotencyKey {
                    // Alone: another host may have taken the key since the look above, and then
                    // this is a replay of its job.
                    outcomes.append(try await insertKeyed(request, key: key, connection))
                } else {
                    batch.append(request)
                    outcomes.append(.created(request.newJob))
                }
                pending += 1
            }
            if !batch.ids.isEmpty {
                for try await _ in try await connection.execute(InsertStatement(batch), logger: logger) {}
            }
            state.withLockedValue { $0.knownPending = pending }
            return outcomes
        }
    }

    /// The columns of a multi-row insert, one array each.
    struct Insertion {
        var ids: [String] = []
        var bodies: [ByteBuffer] = []
        var hashes: [String] = []
        var taskCounts: [Int] = []
        var createdAt: [Double] = []
        /// Empty strings for none: arrays of optionals are not encodable.
        var pinnedOwners: [String] = []
        var clients: [String] = []
        var starters: [String] = []
        var requestIDs: [String] = []

        mutating func append(_ request: SubmitRequest) {
            ids.append(request.id)
            bodies.append(ByteBuffer(bytes: request.body))
            hashes.append(request.hash)
            taskCounts.append(request.taskCount)
            createdAt.append(request.now)
            pinnedOwners.append(request.pinnedTo?.token ?? "")
            clients.append(request.client ?? "")
            starters.append(request.startedBy?.token ?? "")
            requestIDs.append(request.requestID ?? "")
        }
    }

    /// The live job `key` names, as a replay or a refusal; `nil` when there is none (an expired
    /// one is removed, freeing the key).
    private func existingJob(key: String, request: SubmitRequest, _ connection: PostgresConnection) async throws
        -> Submission?
    {
        for try await row in try await connection.query(
            "SELECT \(unescaped: Self.columns) FROM fanout_jobs WHERE idempotency_key = \(key)", logger: logger)
        {
            let (job, hash) = try Self.job(row)
            if let expiry = job.expiresAt, expiry <= request.now {
                try await connection.query(
                    "DELETE FROM fanout_jobs WHERE idempotency_key = \(key) AND expires_at <= \(request.now)",
                    logger: logger)
                return nil
            }
            return hash == request.hash ? .replayed(job) : .keyReused
        }
        return nil
    }

    private func insertKeyed(_ request: SubmitRequest, key: String, _ connection: PostgresConnection) async throws
        -> Submission
    {
        var inserted = false
        for try await _ in try await connection.query(
            """
            INSERT INTO fanout_jobs (
                id, status, body, body_hash, idempotency_key, task_count, created_at, pinned_owner, client, owner,
                started_at, claims, request_id)
            VALUES (
                \(request.id), \(request.newJob.status.rawValue), \(ByteBuffer(bytes: request.body)), \(request.hash),
                \(key), \(request.taskCount), \(request.now), \(request.pinnedTo?.token), \(request.client),
                \(request.startedBy?.token), \(request.newJob.startedAt), \(request.startedBy == nil ? 0 : 1),
                \(request.requestID))
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING 1
            """, logger: logger)
        {
            inserted = true
        }
        if inserted { return .created(request.newJob) }
        // Another host committed the key between the look and the insert: its job, then.
        return try await existingJob(key: key, request: request, connection) ?? .keyReused
    }

    public func job(_ id: String, now: Double, client: String?) async throws -> Job? {
        for try await row in try await self.client.query(
            """
            SELECT \(unescaped: Self.columns) FROM fanout_jobs
            WHERE id = \(id) AND (expires_at IS NULL OR expires_at > \(now))
                AND (\(client)::text IS NULL OR client = \(client))
            """, logger: logger)
        {
            return try Self.job(row).job
        }
        return nil
    }

    public func cancel(
        _ id: String, now: Double, retention: Double, client: String?,
        cancelledResults: @Sendable ([UInt8]) -> BatchResult?
    ) async throws -> CancelOutcome {
        let outcome = try await self.client.withTransaction(logger: logger) { connection -> CancelOutcome in
            var found: (job: Job, body: [UInt8])?
            for try await row in try await connection.query(
                """
                SELECT \(unescaped: Self.columns), body FROM fanout_jobs
                WHERE id = \(id) AND (expires_at IS NULL OR expires_at > \(now))
                    AND (\(client)::text IS NULL OR client = \(client))
                FOR UPDATE
                """, logger: logger)
            {
                found = (try Self.job(row).job, Array(try row.makeRandomAccess()["body"].decode(ByteBuffer.self).readableBytesView))
            }
            guard let (job, body) = found else { return .notFound }
            switch job.status {
            case .queued:
                let outcome = cancelledResults(body).map(JobOutcome.init) ?? JobOutcome(counts: .init())
                try await finish(
                    connection, id: id, owner: nil, status: .cancelled, outcome: outcome, error: nil, now: now,
                    retention: retention, fromStatus: "queued")
            case .running:
                try await connection.query(
                    "UPDATE fanout_jobs SET cancel_requested = true WHERE id = \(id)", logger: logger)
            case .succeeded, .partial, .failed, .cancelled:
                return .finished(job)
            }
            var latest = job
            for try await row in try await connection.query(
                "SELECT \(unescaped: Self.columns) FROM fanout_jobs WHERE id = \(id)", logger: logger)
            {
                latest = try Self.job(row).job
            }
            return job.status == .queued ? .cancelled(latest) : .requested(latest)
        }
        // After the commit, so that the owner sees the flag when told.
        if case .requested = outcome { try? await notify("c" + id) }
        return outcome
    }

    // MARK: Runners

    public func claim(owner: Owner, limit: Int, now: Double) async throws -> [Claim] {
        guard limit > 0 else { return [] }
        var claims: [(Claim, Double)] = []
        for try await (id, body, pinned, created, requestID) in try await client.execute(
            ClaimStatement(owner: owner.token, limit: limit, now: now), logger: logger)
        {
            claims.append(
                (Claim(id: id, body: Array(body.readableBytesView), isPinned: pinned, requestID: requestID), created))
        }
        return claims.sorted { $0.1 < $1.1 }.map(\.0)
    }

    /// Liveness is the host's (see ``hold(_:registered:)``); this returns the jobs a `DELETE`
    /// asked to stop, the fallback for a missed notification.
    public func heartbeat(owner: Owner, now: Double) async throws -> Set<String> {
        var ids = Set<String>()
        for try await id in try await client.query(
            """
            SELECT id FROM fanout_jobs WHERE owner = \(owner.token) AND status = 'running' AND cancel_requested
            """, logger: logger
        ).decode(String.self) {
            ids.insert(id)
        }
        return ids
    }

    public func recordProgress(_ id: String, owner: Owner, progress: BatchResult.Summary) async throws {
        try await client.query(
            """
            UPDATE fanout_jobs SET succeeded = \(progress.succeeded), failed = \(progress.failed),
                skipped = \(progress.skipped), cancelled = \(progress.cancelled)
            WHERE id = \(id) AND owner = \(owner.token) AND status = 'running'
            """, logger: logger)
    }

    public func finish(
        _ id: String, owner: Owner, status: JobStatus, outcome: Outcome, error: TaskError?, now: Double,
        retention: Double
    ) async throws {
        guard let finishes = finishes.withLockedValue({ $0 }) else { throw JobStoreError.closed }
        try await finishes.write(
            FinishRequest(
                id: id, owner: owner.token, status: status, outcome: outcome, error: error, now: now,
                retention: retention))
    }

    /// One job's outcome, as ``finish(_:owner:status:outcome:error:now:retention:)`` received it.
    struct FinishRequest: Sendable {
        let id: String
        let owner: String
        let status: JobStatus
        let outcome: Outcome
        let error: TaskError?
        let now: Double
        let retention: Double
    }

    /// Outcomes stored together share one transaction and one flush, as submissions do: with
    /// many short jobs, a flush per job would bound how many end per second.
    private func finish(_ requests: [FinishRequest]) async throws -> [Void] {
        try await client.withTransaction(logger: logger) { connection in
            for request in requests {
                try await finish(
                    connection, id: request.id, owner: request.owner, status: request.status,
                    outcome: request.outcome, error: request.error, now: request.now, retention: request.retention,
                    fromStatus: "running")
            }
            return Array(repeating: (), count: requests.count)
        }
    }

    /// Ends a job that is in `fromStatus` (and `owner`'s, when given): one fenced statement.
    private func finish(
        _ connection: PostgresConnection, id: String, owner: String?, status: JobStatus, outcome: Outcome,
        error: TaskError?, now: Double, retention: Double, fromStatus: String
    ) async throws {
        for try await _ in try await connection.execute(
            FinishStatement(
                id: id, owner: owner, status: status, outcome: outcome, error: error, now: now, retention: retention,
                fromStatus: fromStatus),
            logger: logger)
        {}
    }

    /// A host is gone when nobody holds its advisory lock any more (its connection ended), or its
    /// heartbeat, by the database's clock, is older than `staleAfter`. Its running jobs, and any
    /// running job whose owner has no host row, end `interrupted`; queued jobs pinned to it fail
    /// with `credentials_unavailable`; its row goes.
    public func recoverAbandoned(
        now: Double, staleAfter: Double, retention: Double,
        interruptedResults: @Sendable ([UInt8], TaskError) -> BatchResult?
    ) async throws -> [String] {
        var gone: [String] = []
        for try await token in try await client.query(
            """
            SELECT h.token FROM fanout_hosts h
            WHERE h.heartbeat_at < clock_timestamp() - make_interval(secs => \(staleAfter))
                OR NOT EXISTS (
                    SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND l.classid::bigint = \(Self.lockNamespace) AND l.objid::bigint = h.lock_key)
            """, logger: logger
        ).decode(String.self) {
            gone.append(token)
        }
        return try await client.withTransaction(logger: logger) { connection in
            var ended: [String] = []
            var rows: [(id: String, body: [UInt8], error: TaskError)] = []
            for try await (id, body) in try await connection.query(
                """
                SELECT id, body FROM fanout_jobs j
                WHERE status = 'running'
                    AND (owner = ANY(\(gone)) OR NOT EXISTS (SELECT 1 FROM fanout_hosts WHERE token = j.owner))
                FOR UPDATE SKIP LOCKED
                """, logger: logger
            ).decode((String, ByteBuffer).self) {
                rows.append((id, Array(body.readableBytesView), .interrupted))
            }
            for try await (id, body) in try await connection.query(
                """
                SELECT id, body FROM fanout_jobs j
                WHERE status = 'queued' AND pinned_owner IS NOT NULL
                    AND (pinned_owner = ANY(\(gone))
                        OR NOT EXISTS (SELECT 1 FROM fanout_hosts WHERE token = j.pinned_owner))
                FOR UPDATE SKIP LOCKED
                """, logger: logger
            ).decode((String, ByteBuffer).self) {
                rows.append((id, Array(body.readableBytesView), .credentialsUnavailable))
            }
            for row in rows {
                let outcome = interruptedResults(row.body, row.error).map(JobOutcome.init) ?? JobOutcome(counts: .init())
                try await finish(
                    connection, id: row.id, owner: nil, status: .failed, outcome: outcome, error: row.error, now: now,
                    retention: retention, fromStatus: row.error == .interrupted ? "running" : "queued")
                ended.append(row.id)
            }
            if !gone.isEmpty {
                try await connection.query("DELETE FROM fanout_hosts WHERE token = ANY(\(gone))", logger: logger)
            }
            return ended
        }
    }

    /// How many jobs wait to be claimed, over every host.
    public func queuedCount() async throws -> Int {
        var count = 0
        for try await value in try await client.query(
            "SELECT count(*)::bigint FROM fanout_jobs WHERE status = 'queued'", logger: logger
        ).decode(Int.self) {
            count = value
        }
        return count
    }

    /// Deletes expired jobs 1,000 at a time, so that no transaction holds many rows or runs long,
    /// and at most 100,000 per call; the rest wait for the next sweep.
    public func sweep(now: Double) async throws -> Int {
        var removed = 0
        for _ in 0..<100 {
            var chunk = 0
            for try await _ in try await client.query(
                """
                DELETE FROM fanout_jobs WHERE id IN (
                    SELECT id FROM fanout_jobs WHERE expires_at <= \(now) LIMIT 1000 FOR UPDATE SKIP LOCKED)
                RETURNING 1
                """, logger: logger)
            {
                chunk += 1
            }
            removed += chunk
            if chunk < 1000 { break }
        }
        return removed
    }

    public func claims(_ id: String) async throws -> Int? {
        for try await count in try await client.query(
            "SELECT claims FROM fanout_jobs WHERE id = \(id)", logger: logger
        ).decode(Int.self) {
            return count
        }
        return nil
    }

    // MARK: Rows

    /// The columns ``job(_:)`` reads.
    private static let columns = """
        id, status, task_count, created_at, started_at, finished_at, expires_at, cancel_requested, succeeded, failed,
        skipped, cancelled, results, summary, error_code, error_message, body_hash, request_id
        """

    private static func job(_ row: PostgresRow) throws -> (job: Job, hash: String) {
        let row = row.makeRandomAccess()
        var progress = BatchResult.Summary()
        progress.succeeded = try row["succeeded"].decode(Int.self)
        progress.failed = try row["failed"].decode(Int.self)
        progress.skipped = try row["skipped"].decode(Int.self)
        progress.cancelled = try row["cancelled"].decode(Int.self)
        let errorCode = try row["error_code"].decode(String?.self)
        let job = Job(
            id: try row["id"].decode(String.self),
            status: JobStatus(rawValue: try row["status"].decode(String.self)) ?? .failed,
            taskCount: try row["task_count"].decode(Int.self),
            progress: progress,
            createdAt: try row["created_at"].decode(Double.self),
            startedAt: try row["started_at"].decode(Double?.self),
            finishedAt: try row["finished_at"].decode(Double?.self),
            expiresAt: try row["expires_at"].decode(Double?.self),
            cancelRequested: try row["cancel_requested"].decode(Bool.self),
            results: try row["results"].decode(ByteBuffer?.self).map { Array($0.readableBytesView) },
            summary: try row["summary"].decode(ByteBuffer?.self).map { Array($0.readableBytesView) },
            error: try errorCode.map { TaskError(code: $0, message: try row["error_message"].decode(String?.self) ?? "") },
            requestID: try row["request_id"].decode(String?.self))
        return (job, try row["body_hash"].decode(String.self))
    }
}

/// Why the PostgreSQL store gave up on something.
enum JobStoreError: Error, CustomStringConvertible {
    /// The host row is gone: the other hosts declared this one dead.
    case declaredDead
    /// A heartbeat took longer than the others wait.
    case heartbeatLate
    /// The store was closed.
    case closed
    /// The connection holding the liveness lock is gone, and the lock with it.
    case connectionClosed

    var description: String {
        switch self {
        case .declaredDead: "the other hosts declared this one gone"
        case .heartbeatLate: "a heartbeat took longer than the others wait"
        case .closed: "the job store is closed"
        case .connectionClosed: "the connection holding this host's liveness lock closed"
        }
    }
}
