import NIOCore
import NIOConcurrencyHelpers

/// At most `limit` holders at once; the others wait in order, and a waiter can leave the queue.
///
/// It bounds the calls in flight to one upstream (its `max_connections`): a call beyond it waits
/// for a free slot, within its task's deadline, instead of opening another connection. Callbacks,
/// not tasks: a call waiting for a slot costs a closure in a queue.
final class ConnectionLimiter: Sendable {
    /// A place in the queue.
    struct Ticket: Sendable, Equatable {
        fileprivate let id: UInt64
    }

    private struct State {
        var available: Int
        /// A ring buffer: handing a slot to the longest waiter must not shift the whole queue.
        var waiters = CircularBuffer<(ticket: Ticket, granted: @Sendable () -> Void)>()
        var nextID: UInt64 = 0
    }

    private let state: NIOLockedValueBox<State>

    init(limit: Int) {
        state = NIOLockedValueBox(State(available: limit))
    }

    /// Takes a slot for `granted`, at once (calling it before returning `nil`) or once one is
    /// released (returning the ticket that ``cancel(_:)`` takes).
    func acquire(_ granted: @escaping @Sendable () -> Void) -> Ticket? {
        let ticket = state.withLockedValue { state -> Ticket? in
            if state.available > 0 {
                state.available -= 1
                return nil
            }
            state.nextID += 1
            let ticket = Ticket(id: state.nextID)
            state.waiters.append((ticket, granted))
            return ticket
        }
        if ticket == nil { granted() }
        return ticket
    }

    /// Leaves the queue. Returns `false` when the slot was already granted: the caller holds it
    /// and must release it.
    func cancel(_ ticket: Ticket) -> Bool {
        state.withLockedValue { state in
            guard let index = state.waiters.firstIndex(where: { $0.ticket == ticket }) else { return false }
            state.waiters.remove(at: index)
            return true
        }
    }

    /// Returns a slot, handing it to the longest waiter if there is one.
    func release() {
        let next = state.withLockedValue { state -> (@Sendable () -> Void)? in
            guard !state.waiters.isEmpty else {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst().granted
        }
        next?()
    }
}
