import NIOConcurrencyHelpers

/// Concurrent writes that share one transaction, and so one flush to disk.
///
/// A write that arrives while no commit is running starts one at once; those that arrive while a
/// commit is running wait for the next, which takes all of them. Each caller is answered only
/// after the commit that holds its write, so an acknowledgement still means durable. When a
/// group's commit fails, each of its writes is retried alone, so that one bad write cannot fail
/// the others.
final class GroupCommit<Request: Sendable, Outcome: Sendable>: Sendable {
    private typealias Waiter = (request: Request, continuation: CheckedContinuation<Outcome, any Error>)

    private struct State: Sendable {
        var waiting: [Waiter] = []
        var committing = false
        /// Commits made, for tests and figures.
        var commits = 0
    }

    private let state = NIOLockedValueBox(State())
    private let maximumGroup: Int
    /// Writes `requests` in one transaction; one outcome per request, in order.
    private let commit: @Sendable ([Request]) async throws -> [Outcome]

    /// - Parameters:
    ///   - maximumGroup: the most writes one transaction takes (the rest wait for the next).
    ///   - commit: writes its requests in one transaction and returns one outcome each, in order.
    init(maximumGroup: Int = 512, commit: @escaping @Sendable ([Request]) async throws -> [Outcome]) {
        self.maximumGroup = maximumGroup
        self.commit = commit
    }

    /// How many commits have been made.
    var commits: Int { state.withLockedValue { $0.commits } }

    /// Writes `request` with whatever else is waiting; returns its outcome once committed.
    func write(_ request: Request) async throws -> Outcome {
        try await withCheckedThrowingContinuation { continuation in
            let startsCommitting = state.withLockedValue { state -> Bool in
                state.waiting.append((request, continuation))
                guard !state.committing else { return false }
                state.committing = true
                return true
            }
            if startsCommitting { Task { await self.commitWaiting() } }
        }
    }

    /// Commits groups until nobody is waiting.
    private func commitWaiting() async {
        while true {
            let group = state.withLockedValue { state -> [Waiter] in
                let group = Array(state.waiting.prefix(maximumGroup))
                state.waiting.removeFirst(group.count)
                if group.isEmpty { state.committing = false }
                return group
            }
            guard !group.isEmpty else { return }
            do {
                let outcomes = try await commitCounted(group.map(\.request))
                for (waiter, outcome) in zip(group, outcomes) { waiter.continuation.resume(returning: outcome) }
            } catch where group.count > 1 {
                for waiter in group {
                    do {
                        waiter.continuation.resume(returning: try await commitCounted([waiter.request])[0])
                    } catch {
                        waiter.continuation.resume(throwing: error)
                    }
                }
            } catch {
                group[0].continuation.resume(throwing: error)
            }
        }
    }

    private func commitCounted(_ requests: [Request]) async throws -> [Outcome] {
        let outcomes = try await commit(requests)
        precondition(outcomes.count == requests.count, "a commit must answer every request")
        state.withLockedValue { $0.commits += 1 }
        return outcomes
    }
}
