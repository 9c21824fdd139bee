import FanoutEngine
import Testing

@Suite("Deadline scheduler")
struct DeadlineSchedulerTests {
    @Test("sleepers wake at their deadlines, earliest first, whatever the order they arrive in")
    func wakesInDeadlineOrder() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let order = try await withThrowingTaskGroup(of: Int.self) { group in
            for milliseconds in [120, 40, 80] {
                group.addTask {
                    try await DeadlineScheduler.shared.sleep(for: .milliseconds(milliseconds))
                    return milliseconds
                }
            }
            var order: [Int] = []
            for try await milliseconds in group { order.append(milliseconds) }
            return order
        }
        #expect(order == [40, 80, 120])
        #expect(clock.now - start >= .milliseconds(120))
    }

    @Test("a cancelled sleeper wakes at once with CancellationError")
    func cancellationWakesAtOnce() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let sleeper = Task { try await DeadlineScheduler.shared.sleep(for: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(20))
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.now - start < .seconds(5))
    }

    @Test("a sleeper cancelled before it starts does not sleep")
    func cancelledBeforeStarting() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let sleeper = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await DeadlineScheduler.shared.sleep(for: .seconds(30))
        }
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.now - start < .seconds(5))
    }

    @Test("thousands of cancelled sleepers all wake, and later sleepers still work")
    func manyCancellations() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let sleepers = (0..<3000).map { _ in Task { try await DeadlineScheduler.shared.sleep(for: .seconds(60)) } }
        for sleeper in sleepers { sleeper.cancel() }
        var cancelled = 0
        for sleeper in sleepers {
            do {
                try await sleeper.value
            } catch is CancellationError {
                cancelled += 1
            }
        }
        #expect(cancelled == 3000)
        #expect(clock.now - start < .seconds(10))
        let later = clock.now
        try await DeadlineScheduler.shared.sleep(for: .milliseconds(10))
        #expect(clock.now - later >= .milliseconds(10))
        #expect(clock.now - later < .seconds(5))
    }
}
