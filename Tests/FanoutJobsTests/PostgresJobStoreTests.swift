import FanoutEngine
import Foundation
import NIOConcurrencyHelpers
import PostgresNIO
import Testing

@testable import FanoutJobs

/// Runs `sql` on `url`'s database, as an operator at a psql prompt would.
private func admin(_ url: DatabaseURL, _ sql: String) async throws -> [String] {
    let client = PostgresClient(configuration: url.configuration)
    let running = Task { await client.run() }
    defer { running.cancel() }
    var values: [String] = []
    for try await value in try await client.query(PostgresQuery(unsafeSQL: sql)).decode(String.self) {
        values.append(value)
    }
    return values
}

private let oneSleep = Array(#"{"tasks":[{"id":"a","op":"sleep","input":{"ms":60000}}]}"#.utf8)

@Suite("PostgreSQL job store")
struct PostgresJobStoreTests {
    @Test("hosts starting at once migrate the schema once, and agree on its version")
    func concurrentMigration() async throws {
        let url = try await TestDatabase.create()
        let stores = try await withThrowingTaskGroup(of: PostgresJobStore.self) { group in
            for _ in 0..<4 { group.addTask { try await PostgresJobStore(url: url, logger: quietLogger) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(try await admin(url, "SELECT version::text FROM fanout_schema") == ["\(PostgresJobStore.schemaVersion)"])
        for store in stores { await store.close() }
    }

    @Test("a host whose lock connection dies is seen gone at once: its running job ends interrupted, and it is told")
    func deadHost() async throws {
        let url = try await TestDatabase.create()
        let hostA = try await PostgresJobStore(url: url, logger: quietLogger)
        let hostB = try await PostgresJobStore(url: url, logger: quietLogger)
        let lost = NIOLockedValueBox(false)
        let ownerA = JobOwner.current()
        try await hostA.attach(ownerA, events: JobStoreEvents(ownershipLost: { lost.withLockedValue { $0 = true } }))
        let ownerB = JobOwner.current()
        try await hostB.attach(ownerB, events: .init())
        let job = try #require(
            try await hostA.submit(body: oneSleep, taskCount: 1, idempotencyKey: nil, maximumPending: 10, now: 1)
                .createdJob)
        #expect(try await hostA.claim(owner: ownerA, limit: 5, now: 2).map(\.id) == [job.id])
        // Alive: B ends nothing.
        #expect(try await hostB.recoverAbandoned(now: 3, staleAfter: 10, retention: 60) { _, _ in nil }.isEmpty)

        // A's lock connection ends, as it does when its process is killed.
        _ = try await admin(
            url,
            """
            SELECT pg_terminate_backend(l.pid)::text FROM pg_locks l JOIN fanout_hosts h ON l.objid::bigint = h.lock_key
            WHERE l.locktype = 'advisory' AND h.token = '\(ownerA.token)'
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """)
        // The backend ends, and its lock with it, a moment after pg_terminate_backend returns:
        // B looks, as hosts do, until it sees A gone (within the 2 s a host is given).
        let clock = ContinuousClock()
        var ended: [String] = []
        let seenBy = clock.now + .seconds(2)
        while ended.isEmpty, clock.now < seenBy {
            ended = try await hostB.recoverAbandoned(now: 4, staleAfter: 10, retention: 60) { _, _ in nil }
            if ended.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(ended == [job.id])
        let interrupted = try #require(try await hostB.job(job.id, now: 4))
        #expect(interrupted.status == .failed)
        #expect(interrupted.error?.code == "interrupted")
        // A learns it lost its liveness, and what it stores of the job afterwards is refused.
        let deadline = clock.now + .seconds(5)
        while !lost.withLockedValue({ $0 }), clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(lost.withLockedValue { $0 })
        try await hostA.finish(
            job.id, owner: ownerA, status: .succeeded, outcome: JobOutcome(counts: .init()), error: nil, now: 5,
            retention: 60)
        #expect(try await hostB.job(job.id, now: 5)?.status == .failed)
        // A host that is not registered claims nothing.
        _ = try #require(
            try await hostA.submit(body: oneSleep, taskCount: 1, idempotencyKey: nil, maximumPending: 10, now: 6)
                .createdJob)
        #expect(try await hostA.claim(owner: ownerA, limit: 5, now: 7).isEmpty)
        // Attached again, as a new owner, it works as before.
        let againA = JobOwner.current()
        try await hostA.attach(againA, events: .init())
        #expect(try await hostA.claim(owner: againA, limit: 5, now: 7).count == 1)
        await hostA.close()
        await hostB.close()
    }

    @Test("a host that stops heartbeating is declared gone by the database's clock")
    func silentHost() async throws {
        let url = try await TestDatabase.create()
        // Its own heartbeats would refresh what the test backdates.
        let store = try await PostgresJobStore(url: url, heartbeatInterval: .seconds(60), logger: quietLogger)
        let owner = JobOwner.current()
        try await store.attach(owner, events: .init())
        _ = try await store.submit(body: oneSleep, taskCount: 1, idempotencyKey: nil, maximumPending: 10, now: 1)
        let claimed = try await store.claim(owner: owner, limit: 1, now: 2)
        #expect(claimed.count == 1)
        // Its last heartbeat a minute ago, by the database's clock: hung, though its lock is held.
        _ = try await admin(
            url, "UPDATE fanout_hosts SET heartbeat_at = clock_timestamp() - interval '1 minute' RETURNING token")
        let ended = try await store.recoverAbandoned(now: 3, staleAfter: 10, retention: 60) { _, _ in nil }
        #expect(ended == claimed.map(\.id))
        #expect(try await admin(url, "SELECT token FROM fanout_hosts").isEmpty)
        await store.close()
    }

    @Test("an idempotency key holds across hosts: submitted on several at once, it makes one job")
    func idempotencyAcrossHosts() async throws {
        let url = try await TestDatabase.create()
        var hosts: [PostgresJobStore] = []
        for _ in 0..<3 { hosts.append(try await PostgresJobStore(url: url, logger: quietLogger)) }
        let outcomes = try await withThrowingTaskGroup(of: JobSubmission.self) { group in
            for index in 0..<30 {
                group.addTask { [hosts] in
                    try await hosts[index % 3].submit(
                        body: oneSleep, taskCount: 1, idempotencyKey: "same", maximumPending: 100, now: 1)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        var ids = Set<String>()
        for outcome in outcomes {
            switch outcome {
            case .created(let job), .replayed(let job): ids.insert(job.id)
            default: Issue.record("unexpected outcome \(outcome)")
            }
        }
        #expect(ids.count == 1)
        #expect(outcomes.compactMap(\.createdJob).count == 1)
        #expect(try await admin(url, "SELECT count(*)::text FROM fanout_jobs") == ["1"])
        for host in hosts { await host.close() }
    }

    @Test("retention deletes expired jobs in chunks, every one of them")
    func sweepInChunks() async throws {
        let url = try await TestDatabase.create()
        let store = try await PostgresJobStore(url: url, logger: quietLogger)
        _ = try await admin(
            url,
            """
            INSERT INTO fanout_jobs (id, status, body, body_hash, task_count, created_at, expires_at)
            SELECT 'j' || n, 'cancelled', '', '', 1, 1, CASE WHEN n <= 2500 THEN 15 ELSE 100 END
            FROM generate_series(1, 2600) AS n RETURNING 'x'
            """)
        #expect(try await store.sweep(now: 16) == 2_500)
        #expect(try await store.sweep(now: 16) == 0)
        #expect(try await admin(url, "SELECT count(*)::text FROM fanout_jobs") == ["100"])
        await store.close()
    }

    @Test("database URLs: TCP, Unix socket directories, and clear errors")
    func urls() throws {
        let tcp = try DatabaseURL("postgres://fan:secret@db.internal:6432/jobs?sslmode=disable")
        #expect(tcp.configuration.host == "db.internal")
        #expect(tcp.configuration.port == 6432)
        #expect(tcp.configuration.username == "fan")
        #expect(tcp.configuration.password == "secret")
        #expect(tcp.configuration.database == "jobs")
        #expect(!tcp.description.contains("secret"))
        let socket = try DatabaseURL("postgresql://fan@/jobs?host=/var/run/postgresql")
        #expect(socket.configuration.unixSocketPath == "/var/run/postgresql/.s.PGSQL.5432")
        let encoded = try DatabaseURL("postgres://fan@%2Ftmp%2Fpg:5433/jobs")
        #expect(encoded.configuration.unixSocketPath == "/tmp/pg/.s.PGSQL.5433")
        #expect(throws: DatabaseURLError.self) { try DatabaseURL("mysql://x@y/z") }
        #expect(throws: DatabaseURLError.self) { try DatabaseURL("postgres:///jobs") }
        #expect(throws: DatabaseURLError.self) { try DatabaseURL("postgres://a@b/c?sslmode=maybe") }
    }
}
