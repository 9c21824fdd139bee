import FanoutEngine
import Testing

@Suite("Batch scheduling")
struct BatchRunnerTests {
    @Test("results come back in request order whatever the completion order")
    func keepsRequestOrder() async throws {
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "slow", "op": "sleep", "input": {"ms": 80}},
              {"id": "medium", "op": "sleep", "input": {"ms": 40}},
              {"id": "fast", "op": "echo", "input": [1, "two", {"three": 3}]}
            ]}
            """#)
        #expect(result.results.map(\.id) == ["slow", "medium", "fast"])
        #expect(result.status == .succeeded)
        #expect(result["fast"]?.output?.description == #"[1, "two", {"three": 3}]"#)
    }

    @Test("raw-JSON tasks run at once are timed in groups of eight that share their time; others alone")
    func timesRawTasksInGroups() throws {
        // Tasks 0-7 are a group, whose first spins for 8 ms; `hash` is timed alone and ends the
        // group after 8-9; 11 starts a group of its own that spins 4 ms.
        var tasks = [#"{"id":"t0","op":"spin","input":8000}"#]
        tasks += (1..<10).map { #"{"id":"t\#($0)","op":"echo","input":\#($0)}"# }
        tasks.append(#"{"id":"t10","op":"hash","input":{"algorithm":"sha256","data":"abc"}}"#)
        tasks.append(#"{"id":"t11","op":"spin","input":4000}"#)
        let batch = try makeDecoder().decode(Array(#"{"tasks":[\#(tasks.joined(separator: ","))]}"#.utf8))
        #expect(batch.runsAtOnce)
        let result = BatchRunner.runAtOnce(batch)
        #expect(result.status == .succeeded)
        let durations = (0..<12).map { result.duration(at: $0) }
        #expect(Set(durations[0..<8]).count == 1, "one share each: \(durations)")
        #expect(durations[0] * 8 >= .milliseconds(8) && durations[0] < .milliseconds(8))
        #expect(durations[8] == durations[9] && durations[8] < .milliseconds(1))
        #expect(durations[10] < .milliseconds(1))
        #expect(durations[11] >= .milliseconds(4))
    }

    @Test("a diamond runs each task only after all its dependencies")
    func runsDiamondInDependencyOrder() async throws {
        let recorder = ProbeRecorder()
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "d", "op": "probe", "input": {"id": "d", "ms": 5}, "depends_on": ["b", "c"]},
              {"id": "b", "op": "probe", "input": {"id": "b", "ms": 120}, "depends_on": ["a"]},
              {"id": "c", "op": "probe", "input": {"id": "c", "ms": 10}, "depends_on": ["a"]},
              {"id": "a", "op": "probe", "input": {"id": "a", "ms": 10}}
            ]}
            """#, recorder: recorder)
        #expect(result.status == .succeeded)
        let a = try #require(recorder.event("a"))
        let b = try #require(recorder.event("b"))
        let c = try #require(recorder.event("c"))
        let d = try #require(recorder.event("d"))
        #expect(b.start >= a.end && c.start >= a.end)
        #expect(d.start >= b.end && d.start >= c.end)
        // b and c are independent of each other: they overlap.
        #expect(c.start < b.end && b.start < c.end)
    }

    @Test("a failure skips its dependents transitively and nothing else")
    func propagatesSkips() async throws {
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "bad", "op": "fail", "input": {"code": "boom", "message": "no"}},
              {"id": "child", "op": "echo", "depends_on": ["bad"]},
              {"id": "grandchild", "op": "echo", "depends_on": ["child"]},
              {"id": "other", "op": "sleep", "input": {"ms": 20}}
            ]}
            """#)
        #expect(result["bad"]?.status == .failed)
        #expect(result["bad"]?.error == TaskError(code: "boom", message: "no"))
        #expect(result["child"]?.status == .skipped)
        #expect(result["child"]?.error?.code == "dependency_failed")
        #expect(result["grandchild"]?.status == .skipped)
        #expect(result["other"]?.status == .succeeded)
        #expect(result.status == .partial)
        #expect(result.count(.skipped) == 2)
    }

    /// A long wait by an operation started without a task (`sleep`), and by one run in a child
    /// task (`probe`): the engine stops both the same way.
    static let longWaits = [
        #""op": "sleep", "input": {"ms": 5000}"#,
        #""op": "probe", "input": {"id": "p", "ms": 5000}"#,
    ]

    @Test("a task past its timeout fails with code timeout and is stopped early", arguments: longWaits)
    func enforcesTaskTimeout(wait: String) async throws {
        let result = try await run(#"{"tasks": [{"id": "t", \#(wait), "timeout_ms": 50}]}"#)
        let task = try #require(result["t"])
        #expect(task.status == .failed)
        #expect(task.error?.code == "timeout")
        #expect(task.duration < .seconds(2))
        #expect(result.status == .failed)
    }

    @Test("the batch deadline cancels running and unstarted tasks with batch_timeout")
    func enforcesBatchDeadline() async throws {
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "quick", "op": "echo"},
              {"id": "long", "op": "sleep", "input": {"ms": 5000}},
              {"id": "after", "op": "echo", "depends_on": ["long"]}
            ], "timeout_ms": 100}
            """#)
        #expect(result["quick"]?.status == .succeeded)
        #expect(result["long"]?.status == .cancelled)
        #expect(result["long"]?.error?.code == "batch_timeout")
        #expect(result["after"]?.status == .cancelled)
        #expect(result["after"]?.error?.code == "batch_timeout")
        #expect(result.duration < .seconds(2))
    }

    @Test("on_error stop cancels everything not yet finished")
    func stopsOnFirstFailure() async throws {
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "long", "op": "sleep", "input": {"ms": 5000}},
              {"id": "wait", "op": "sleep", "input": {"ms": 30}},
              {"id": "bad", "op": "fail", "input": {"code": "x"}, "depends_on": ["wait"]},
              {"id": "later", "op": "echo", "depends_on": ["long"]}
            ], "on_error": "stop"}
            """#)
        #expect(result["bad"]?.status == .failed)
        #expect(result["long"]?.status == .cancelled)
        #expect(result["long"]?.error?.code == "stopped")
        #expect(result["later"]?.status == .cancelled)
        #expect(result.duration < .seconds(2))
    }

    @Test("an operation that cancels itself stops nothing else")
    func selfCancellationIsLocal() async throws {
        let result = try await run(
            #"{"tasks": [{"id": "q", "op": "quit"}, {"id": "s", "op": "sleep", "input": {"ms": 30}}]}"#)
        #expect(result["q"]?.status == .cancelled)
        #expect(result["q"]?.error?.code == "cancelled")
        #expect(result["s"]?.status == .succeeded)
    }

    @Test("on_error continue lets siblings of a failure finish")
    func continuesPastFailure() async throws {
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "bad", "op": "fail", "input": {"code": "x"}},
              {"id": "slow", "op": "sleep", "input": {"ms": 50}}
            ]}
            """#)
        #expect(result["slow"]?.status == .succeeded)
    }

    @Test("no more tasks run at once than the batch's concurrency", arguments: [1, 3, 8])
    func enforcesConcurrencyLimit(concurrency: Int) async throws {
        let recorder = ProbeRecorder()
        let tasks = (0..<12).map { #"{"id": "t\#($0)", "op": "probe", "input": {"id": "t\#($0)", "ms": 60}}"# }
        let result = try await run(
            #"{"tasks": [\#(tasks.joined(separator: ","))], "concurrency": \#(concurrency)}"#, recorder: recorder)
        #expect(result.status == .succeeded)
        #expect(recorder.maximumRunning == concurrency)
    }

    @Test("independent waits run concurrently: 100 sleeps of 100 ms take well under 10 s")
    func runsIndependentTasksConcurrently() async throws {
        let tasks = (0..<100).map { #"{"id": "s\#($0)", "op": "sleep", "input": {"ms": 100}}"# }
        let clock = ContinuousClock()
        let start = clock.now
        let result = try await run(#"{"tasks": [\#(tasks.joined(separator: ","))]}"#)
        #expect(result.count(.succeeded) == 100)
        #expect(clock.now - start < .seconds(3))
    }

    @Test("cancelling the caller stops running operations at once and reports them cancelled", arguments: longWaits)
    func cancellationReachesOperations(wait: String) async throws {
        let batch = try decode(
            #"{"tasks": [{"id": "a", \#(wait)}, {"id": "b", "op": "echo", "depends_on": ["a"]}]}"#)
        let clock = ContinuousClock()
        let start = clock.now
        let task = Task { await BatchRunner.run(batch) { .shutdown } }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        let result = await task.value
        #expect(clock.now - start < .seconds(3))
        #expect(result["a"]?.status == .cancelled)
        #expect(result["a"]?.error?.code == "shutdown")
        #expect(result["b"]?.status == .cancelled)
        #expect(result.status == .failed)
    }

    @Test("an operation reporting after its timeout, or before start returns, is handled once")
    func callbackEdgeCases() async throws {
        let reportsBefore = StubbornOperation.reports.withLock { $0 }
        let result = try await run(
            #"""
            {"tasks": [
              {"id": "late", "op": "stubborn", "input": {"ms": 150}, "timeout_ms": 30},
              {"id": "now", "op": "stubborn", "input": {"ms": 0}},
              {"id": "after", "op": "echo", "input": 1, "depends_on": ["now"]}
            ]}
            """#)
        #expect(result["late"]?.status == .failed)
        #expect(result["late"]?.error?.code == "timeout")
        #expect(result["now"]?.output?.description == #"{"ms":0}"#)
        #expect(result["after"]?.status == .succeeded)
        // The late report arrives after the batch returned, into an inbox nobody reads: it must
        // neither crash nor disturb later batches.
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(5)
        while StubbornOperation.reports.withLock({ $0 }) < reportsBefore + 2, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(StubbornOperation.reports.withLock { $0 } >= reportsBefore + 2)
        let again = try await run(#"{"tasks": [{"id": "x", "op": "stubborn", "input": {"ms": 0}}]}"#)
        #expect(again.status == .succeeded)
    }

    @Test("integers and durations are written exactly")
    func writesNumbers() {
        var writer = JSONWriter()
        for value in [0, 7, 10, 99, 1_234_567, -42, Int.max] {
            writer.integer(value)
            writer.raw(",")
        }
        writer.milliseconds(.microseconds(1_234_567))
        writer.raw(",")
        writer.milliseconds(.microseconds(5))
        #expect(String(decoding: writer.bytes, as: UTF8.self) == "0,7,10,99,1234567,-42,\(Int.max),1234.567,0.005")
    }

    @Test("the response body has the documented shape and summary")
    func encodesResult() async throws {
        let result = try await run(
            #"{"tasks": [{"id": "q\"uote", "op": "echo", "input": "x"}, {"id": "f", "op": "fail", "input": {"code": "c", "message": "line\nbreak"}}]}"#
        )
        let text = result.text
        #expect(
            text.hasPrefix(
                #"{"status":"partial","results":[{"id":"q\"uote","status":"succeeded","output":"x","duration_ms":"#))
        #expect(
            text.contains(#"{"id":"f","status":"failed","error":{"code":"c","message":"line\nbreak"},"duration_ms":"#))
        #expect(
            text.contains(#""summary":{"total":2,"succeeded":1,"failed":1,"skipped":0,"cancelled":0,"duration_ms":"#))
    }
}
