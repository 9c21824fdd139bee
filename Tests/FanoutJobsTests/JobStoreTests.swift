import FanoutEngine
import Foundation
import Logging
import Testing

@testable import FanoutJobs

#if canImport(Glibc)
    import Glibc
#endif

private let decoder = BatchDecoder(registry: .builtIns(limits: EngineLimits()), limits: EngineLimits())

private func body(_ json: String) -> [UInt8] { Array(json.utf8) }

/// The job `id` once `done` says it has reached the awaited state; fails the test after 10 s.
private func awaitJob(_ manager: JobManager, _ id: String, until done: (Job) -> Bool) async throws -> Job {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(10)
    while clock.now < deadline {
        if let job = try await manager.job(id), done(job) { return job }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("job \(id) never reached the awaited state")
    throw CancellationError()
}

extension JobStore.Submission {
    /// The job a submission created, or `nil` for any other outcome (for `#require`).
    var createdJob: Job? {
        if case .created(let job) = self { job } else { nil }
    }
}

private let twoEchoes = body(#"{"tasks":[{"id":"a","op":"echo","input":1},{"id":"b","op":"echo","input":2}]}"#)

private func text(_ bytes: [UInt8]?) -> String { bytes.map { String(decoding: $0, as: UTF8.self) } ?? "nil" }

private func allCancelled(_ body: [UInt8], _ error: TaskError) -> BatchResult? {
    (try? decoder.decode(body)).map { BatchResult.allCancelled($0, error: error) }
}

private let now = 1_000_000.0

/// The store contract, against both stores.
@Suite("Job store")
struct JobStoreTests {

    @Test("with clients kept apart, a job and its idempotency key are its client's alone", arguments: StoreKind.allCases)
    func clientsKeptApart(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            func submit(_ client: String, key: String? = "k") async throws -> JobStore.Submission {
                try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: key, maximumPending: 10, now: now, client: client,
                    maximumPendingForClient: 2)
            }
            let job = try #require(try await submit("a").createdJob)
            #expect(try await store.job(job.id, now: now, client: "a") != nil)
            #expect(try await store.job(job.id, now: now, client: "b") == nil)
            let cancelled = try await store.cancel(job.id, now: now, retention: 10, client: "b") { _ in nil }
            guard case .notFound = cancelled else {
                Issue.record("client b cancelled client a's job: \(cancelled)")
                return
            }
            #expect(try await store.job(job.id, now: now, client: "a")?.status == .queued)
            // The same key: b gets its own job, a gets its job back.
            let other = try #require(try await submit("b").createdJob)
            #expect(other.id != job.id)
            guard case .replayed(let replayed) = try await submit("a") else {
                Issue.record("client a's key did not replay its job")
                return
            }
            #expect(replayed.id == job.id)
            // Two pending jobs at most per client; others are not affected.
            _ = try #require(try await submit("a", key: nil).createdJob)
            guard case .clientFull = try await submit("a", key: nil) else {
                Issue.record("client a went past its pending-jobs limit")
                return
            }
            _ = try #require(try await submit("c", key: nil).createdJob)
        }
    }

    @Test("submissions made together share commits, and each sees those committed before it", arguments: StoreKind.allCases)
    func groupCommit(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            // 300 at once, 10 of them with one idempotency key, against a limit of 250 pending.
            let outcomes = try await withThrowingTaskGroup(of: JobStore.Submission.self) { group in
                for index in 0..<300 {
                    group.addTask { [store] in
                        try await store.submit(
                            body: twoEchoes, taskCount: 2, idempotencyKey: index < 10 ? "same" : nil,
                            maximumPending: 250, now: now)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let created = outcomes.compactMap(\.createdJob)
            let replayed = outcomes.filter { if case .replayed = $0 { true } else { false } }
            let full = outcomes.filter { if case .full = $0 { true } else { false } }
            // Exactly the limit was created, the key made one job and replayed it to the others (or
            // found the store full for them), and the rest were refused.
            #expect(created.count == 250)
            #expect(Set(created.map(\.id)).count == 250)
            #expect(replayed.count + full.count == 50)
            for job in created { #expect(try await store.job(job.id, now: now)?.status == .queued) }
            // Far fewer transactions than submissions: they were grouped.
            #expect(store.submissionCommits < 300, "\(store.submissionCommits) commits for 300 submissions")

            // A client's own limit holds within a group too.
            let mine = try await withThrowingTaskGroup(of: JobStore.Submission.self) { group in
                for _ in 0..<20 {
                    group.addTask { [store] in
                        try await store.submit(
                            body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 1_000, now: now,
                            client: "c", maximumPendingForClient: 5)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(mine.compactMap(\.createdJob).count == 5)
            #expect(mine.filter { if case .clientFull = $0 { true } else { false } }.count == 15)
        }
    }

    @Test("a submitted job is queued, claimed exactly once, and stores its results", arguments: StoreKind.allCases)
    func lifecycle(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            guard
                case .created(let job) = try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 10, now: now)
            else {
                Issue.record("not created")
                return
            }
            #expect(job.id.count == 32)
            #expect(try await store.job(job.id, now: now)?.status == .queued)

            let owner = JobStore.Owner.current()
            try await store.attach(owner, events: .init())
            let claim = try #require(try await store.claim(owner: owner, limit: 1, now: now + 1).first)
            #expect(claim.id == job.id)
            #expect(claim.body == twoEchoes)
            #expect(try await store.claim(owner: JobStore.Owner.current(), limit: 1, now: now + 1).first == nil)
            #expect(try await store.job(job.id, now: now + 1)?.status == .running)

            let result = await BatchRunner.run(try decoder.decode(claim.body))
            // Another owner cannot finish it.
            try await store.finish(
                job.id, owner: JobStore.Owner.current(), status: .failed, outcome: JobStore.Outcome(counts: .init()),
                error: nil, now: now + 2,
                retention: 60)
            #expect(try await store.job(job.id, now: now + 2)?.status == .running)
            try await store.finish(
                job.id, owner: owner, status: .succeeded, outcome: JobStore.Outcome(result), error: nil, now: now + 2,
                retention: 60)

            let finished = try #require(try await store.job(job.id, now: now + 3))
            #expect(finished.status == .succeeded)
            #expect(finished.progress.succeeded == 2)
            #expect(finished.expiresAt == now + 62)
            let document = text(finished.jsonBytes())
            #expect(document.contains(#""results":[{"id":"a","status":"succeeded","output":1,"#))
            #expect(document.contains(#""summary":{"total":2,"succeeded":2,"failed":0,"skipped":0,"cancelled":0,"#))
            #expect(
                document.contains(#""progress":{"total":2,"succeeded":2,"failed":0,"skipped":0,"cancelled":0,"pending":0}"#)
            )
            #expect(try await store.claims(job.id) == 1)
        }
    }

    @Test("a job submitted as started by its owner is stored running, claimed once, and claimable by no one",
        arguments: StoreKind.allCases)
    func startedBySubmitter(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let owner = JobStore.Owner.current()
            try await store.attach(owner, events: .init())
            let job = try #require(
                try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 10, now: now, startedBy: owner
                ).createdJob)
            #expect(job.status == .running)
            #expect(job.startedAt == now)
            #expect(try await store.job(job.id, now: now)?.status == .running)
            #expect(try await store.claim(owner: owner, limit: 5, now: now).isEmpty)
            #expect(try await store.claims(job.id) == 1)
            // Its owner finishes it as any claimed job.
            try await store.finish(
                job.id, owner: owner, status: .succeeded, outcome: JobStore.Outcome(counts: .init()), error: nil,
                now: now + 1, retention: 60)
            #expect(try await store.job(job.id, now: now + 1)?.status == .succeeded)
        }
    }

    @Test("an idempotency key returns the same job for the same body and refuses a different body", arguments: StoreKind.allCases)
    func idempotency(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let first = try await store.submit(
                body: twoEchoes, taskCount: 2, idempotencyKey: "k1", maximumPending: 10, now: now)
            let again = try await store.submit(
                body: twoEchoes, taskCount: 2, idempotencyKey: "k1", maximumPending: 10, now: now)
            guard case .created(let job) = first, case .replayed(let replayed) = again else {
                Issue.record("expected created then replayed")
                return
            }
            #expect(replayed.id == job.id)
            let other = try await store.submit(
                body: body(#"{"tasks":[{"id":"x","op":"echo"}]}"#), taskCount: 1, idempotencyKey: "k1", maximumPending: 10,
                now: now)
            guard case .keyReused = other else {
                Issue.record("a different body under the same key was accepted")
                return
            }
            // A different key is a different job.
            guard
                case .created(let second) = try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: "k2", maximumPending: 10, now: now)
            else {
                Issue.record("not created")
                return
            }
            #expect(second.id != job.id)
        }
    }

    @Test("past the pending limit submissions are refused", arguments: StoreKind.allCases)
    func pendingLimit(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<3 {
                _ = try await store.submit(body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 3, now: now)
            }
            guard
                case .full = try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 3, now: now)
            else {
                Issue.record("accepted past the limit")
                return
            }
        }
    }

    @Test("cancelling a queued job ends it at once; a running one is flagged for its owner", arguments: StoreKind.allCases)
    func cancellation(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let queued = try #require(try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 10, now: now).createdJob)
            guard
                case .cancelled(let cancelled) = try await store.cancel(
                    queued.id, now: now, retention: 60,
                    cancelledResults: { allCancelled($0, TaskError(code: "cancelled", message: "")) })
            else {
                Issue.record("queued job not cancelled")
                return
            }
            #expect(cancelled.status == .cancelled)
            #expect(cancelled.progress.cancelled == 2)
            #expect(try await store.claim(owner: .current(), limit: 1, now: now).first == nil)

            let job = try #require(try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 10, now: now).createdJob)
            let owner = JobStore.Owner.current()
            try await store.attach(owner, events: .init())
            _ = try await store.claim(owner: owner, limit: 1, now: now).first
            guard
                case .requested(let running) = try await store.cancel(
                    job.id, now: now, retention: 60, cancelledResults: { _ in nil })
            else {
                Issue.record("running job not flagged")
                return
            }
            #expect(running.cancelRequested)
            #expect(try await store.heartbeat(owner: owner, now: now + 1) == [job.id])
            #expect(try await store.heartbeat(owner: .current(), now: now + 1).isEmpty)

            guard
                case .notFound = try await store.cancel(
                    String(repeating: "0", count: 32), now: now, retention: 60, cancelledResults: { _ in nil })
            else {
                Issue.record("unknown id found")
                return
            }
        }
    }

    @Test("on one host, running jobs of a dead or silent responder are reported failed with interrupted")
    func recovery() async throws {
        try await withStore(.sqlite) { store in
            let store = try #require(store as? SQLiteJobStore)
            var ids: [String] = []
            for _ in 0..<3 {
                let job = try #require(try await store.submit(
                        body: twoEchoes, taskCount: 2, idempotencyKey: nil, maximumPending: 10, now: now).createdJob)
                ids.append(job.id)
            }
            let dead = JobStore.Owner(token: "dead", pid: 999_999)
            let silent = JobStore.Owner(token: "silent", pid: getpid())
            let alive = JobStore.Owner(token: "alive", pid: getpid())
            _ = try await store.claim(owner: dead, limit: 1, now: now + 100).first
            _ = try await store.claim(owner: silent, limit: 1, now: now).first
            _ = try await store.claim(owner: alive, limit: 1, now: now + 100).first

            let ended = try await store.recoverAbandoned(
                staleBefore: now + 50, now: now + 101, retention: 60,
                isAlive: { pid, token in token != "dead" }, interruptedResults: allCancelled)
            #expect(Set(ended) == [ids[0], ids[1]])
            for id in ids.prefix(2) {
                let job = try #require(try await store.job(id, now: now + 101))
                #expect(job.status == .failed)
                #expect(job.error?.code == "interrupted")
                #expect(text(job.results).contains(#""code":"interrupted""#))
            }
            #expect(try await store.job(ids[2], now: now + 101)?.status == .running)
        }
    }

    @Test("finished jobs disappear after their retention time, and the sweep removes them", arguments: StoreKind.allCases)
    func retention(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let job = try #require(try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: "kept", maximumPending: 10, now: now).createdJob)
            _ = try await store.cancel(job.id, now: now, retention: 10, cancelledResults: { _ in nil })
            #expect(try await store.job(job.id, now: now + 9) != nil)
            #expect(try await store.job(job.id, now: now + 10) == nil)
            #expect(try await store.sweep(now: now + 10) == 1)
            // Its idempotency key is free again.
            guard
                case .created = try await store.submit(
                    body: twoEchoes, taskCount: 2, idempotencyKey: "kept", maximumPending: 10, now: now + 11)
            else {
                Issue.record("expired key still taken")
                return
            }
        }
    }
}

@Suite("Job manager")
struct JobManagerTests {
    private func manager(_ store: any JobStore, maximumRunning: Int = 4, maximumResultBytes: Int = 16 << 20)
        -> JobManager
    {
        var configuration = JobManager.Configuration()
        configuration.maximumRunning = maximumRunning
        configuration.maximumResultBytes = maximumResultBytes
        configuration.pollInterval = .milliseconds(20)
        configuration.heartbeatInterval = .milliseconds(50)
        configuration.progressInterval = .milliseconds(10)
        return JobManager(store: store, decoder: decoder, configuration: configuration, logger: quietLogger)
    }

    @Test("a job runs in the background and reports progress, then results", arguments: StoreKind.allCases)
    func runsJobs(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let manager = manager(store)
            manager.start()
            let sleeps = body(
                #"{"tasks":[{"id":"fast","op":"sleep","input":{"ms":10}},{"id":"slow","op":"sleep","input":{"ms":3000}}]}"#)
            let job = try #require(try await manager.submit(body: sleeps, taskCount: 2, idempotencyKey: nil).createdJob)
            // Progress is written while the job runs: the fast task's end shows before the slow one's.
            // The slow task leaves about 3 s to see it: with 400 ms, one poll slowed by a loaded
            // machine (tests run in parallel) could miss the window, about once in 20 runs.
            let midway = try await awaitJob(manager, job.id) { $0.progress.succeeded == 1 }
            #expect(midway.status == .running)
            let finished = try await awaitJob(manager, job.id) { $0.status.isFinished }
            #expect(finished.status == .succeeded)
            #expect(text(finished.results).contains(#""id":"slow","status":"succeeded""#))
            await manager.shutdown(grace: .seconds(1))
        }
    }

    @Test("DELETE stops a running job: finished results are kept, the rest cancelled", arguments: StoreKind.allCases)
    func cancelsRunningJobs(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let manager = manager(store)
            manager.start()
            let work = body(
                #"{"tasks":[{"id":"done","op":"echo","input":1},{"id":"long","op":"sleep","input":{"ms":10000}}]}"#)
            let job = try #require(try await manager.submit(body: work, taskCount: 2, idempotencyKey: nil).createdJob)
            // Running, and its first task (an echo) done: a job started where it was submitted is
            // `running` before any of its tasks ran.
            _ = try await awaitJob(manager, job.id) { $0.status == .running }
            try await Task.sleep(for: .milliseconds(200))
            let clock = ContinuousClock()
            let start = clock.now
            let outcome = try await manager.cancel(job.id)
            guard case .cancelled(let cancelled) = outcome else {
                Issue.record("not cancelled: \(outcome) \(text(try await manager.job(job.id)?.jsonBytes()))")
                return
            }
            #expect(clock.now - start < .seconds(2))
            #expect(cancelled.status == .cancelled)
            #expect(text(cancelled.results).contains(#"{"id":"done","status":"succeeded","output":1,"#))
            #expect(text(cancelled.results).contains(#"{"id":"long","status":"cancelled","#))
            await manager.shutdown(grace: .seconds(1))
        }
    }

    @Test("with a free slot, a job starts where it was submitted, at once; without one it is queued",
        arguments: StoreKind.allCases)
    func startsWhereSubmitted(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let manager = manager(store, maximumRunning: 1)
            manager.start()
            // Attached once a first job can be claimed.
            let first = try #require(
                try await manager.submit(body: body(#"{"tasks":[{"id":"a","op":"echo"}]}"#), taskCount: 1,
                    idempotencyKey: nil).createdJob)
            _ = try await awaitJob(manager, first.id) { $0.status.isFinished }
            // Its slot is free once its task has ended, just after its outcome was stored.
            while manager.runningCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
            let long = body(#"{"tasks":[{"id":"a","op":"sleep","input":{"ms":400}}]}"#)
            let started = try #require(try await manager.submit(body: long, taskCount: 1, idempotencyKey: nil).createdJob)
            #expect(started.status == .running)
            let queued = try #require(try await manager.submit(body: long, taskCount: 1, idempotencyKey: nil).createdJob)
            #expect(queued.status == .queued)
            for id in [started.id, queued.id] {
                #expect(try await awaitJob(manager, id) { $0.status.isFinished }.status == .succeeded)
                #expect(try await store.claims(id) == 1)
            }
            await manager.shutdown(grace: .seconds(1))
        }
    }

    @Test("a DELETE made through another responder stops the job where it runs", arguments: StoreKind.allCases)
    func cancelsElsewhere(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let other = try await openStore(sameAs: store)
            let runner = manager(store)
            // The other responder runs nothing: it only accepts the DELETE.
            let front = manager(other, maximumRunning: 0)
            runner.start()
            front.start()
            let work = body(#"{"tasks":[{"id":"long","op":"sleep","input":{"ms":10000}}]}"#)
            let job = try #require(try await front.submit(body: work, taskCount: 1, idempotencyKey: nil).createdJob)
            _ = try await awaitJob(front, job.id) { $0.status == .running }
            let outcome = try await front.cancel(job.id, wait: .seconds(3))
            guard case .cancelled(let cancelled) = outcome else {
                Issue.record("not cancelled where it ran: \(outcome)")
                return
            }
            #expect(text(cancelled.results).contains(#"{"id":"long","status":"cancelled","#))
            await runner.shutdown(grace: .seconds(1))
            await front.shutdown(grace: .seconds(1))
            await other.close()
        }
    }

    @Test("two responders on one store run every job exactly once", arguments: StoreKind.allCases)
    func sharedStore(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let otherStore = try await openStore(sameAs: store)
            let first = manager(store, maximumRunning: 2)
            let second = manager(otherStore, maximumRunning: 2)
            first.start()
            second.start()
            var ids: [String] = []
            for index in 0..<20 {
                let submitter = index.isMultiple(of: 2) ? first : second
                let job = try #require(try await submitter.submit(
                        body: body(#"{"tasks":[{"id":"s","op":"sleep","input":{"ms":20}}]}"#), taskCount: 1,
                        idempotencyKey: nil).createdJob)
                ids.append(job.id)
            }
            for id in ids {
                #expect(try await awaitJob(first, id) { $0.status.isFinished }.status == .succeeded)
                #expect(try await first.store.claims(id) == 1)
            }
            await first.shutdown(grace: .seconds(1))
            await second.shutdown(grace: .seconds(1))
            await otherStore.close()
        }
    }

    @Test("results over the size limit are not stored: the job fails with result_too_large, counts kept",
        arguments: StoreKind.allCases)
    func resultTooLarge(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let manager = manager(store, maximumResultBytes: 1024)
            manager.start()
            let big = String(repeating: "x", count: 2000)
            let submitted = try #require(try await manager.submit(
                    body: body(#"{"tasks":[{"id":"a","op":"echo","input":"\#(big)"}]}"#), taskCount: 1,
                    idempotencyKey: nil).createdJob)
            let finished = try await awaitJob(manager, submitted.id) { $0.status.isFinished }
            #expect(finished.status == .failed)
            #expect(finished.error?.code == "result_too_large")
            #expect(finished.results == nil)
            #expect(finished.progress.succeeded == 1)
            await manager.shutdown(grace: .seconds(1))
        }
    }

    @Test("at shutdown a job still running after the grace period is reported interrupted; queued ones stay",
        arguments: StoreKind.allCases)
    func shutdownInterrupts(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let manager = manager(store)
            manager.start()
            let long = body(#"{"tasks":[{"id":"a","op":"sleep","input":{"ms":10000}}]}"#)
            let running = try #require(try await manager.submit(body: long, taskCount: 1, idempotencyKey: nil).createdJob)
            _ = try await awaitJob(manager, running.id) { $0.status == .running }
            let clock = ContinuousClock()
            let start = clock.now
            await manager.shutdown(grace: .milliseconds(100))
            #expect(clock.now - start < .seconds(3))
            let ended = try #require(try await manager.job(running.id))
            #expect(ended.status == .failed)
            #expect(ended.error?.code == "interrupted")
            #expect(text(ended.results).contains(#""code":"shutdown""#))
            // Submitted after the shutdown: stays queued for the next responder.
            let queued = try #require(try await manager.submit(body: long, taskCount: 1, idempotencyKey: nil).createdJob)
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await manager.job(queued.id)?.status == .queued)
        }
    }
}
