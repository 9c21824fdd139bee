import CLinux

#if canImport(Glibc)
    import Glibc
#endif

/// Owns an epoll instance and an eventfd that wakes whoever waits on it.
///
/// Registrations are changed from any thread while the poller waits: epoll applies them at
/// once, so no wake-up is needed for them.
final class Epoll: @unchecked Sendable {
    // @unchecked: the descriptors are immutable; epoll calls are thread-safe.
    let descriptor: Int32
    private let wakeDescriptor: Int32
    /// The token reported when `wake()` was called.
    static let wakeToken: UInt64 = 0

    init() throws(FastCGIServerError) {
        descriptor = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard descriptor >= 0 else { throw .system("epoll_create1", errno) }
        wakeDescriptor = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard wakeDescriptor >= 0 else {
            close(descriptor)
            throw .system("eventfd", errno)
        }
        add(wakeDescriptor, events: EPOLLIN.rawValue, token: Self.wakeToken)
    }

    deinit {
        close(wakeDescriptor)
        close(descriptor)
    }

    func add(_ fd: Int32, events: UInt32, token: UInt64) {
        control(EPOLL_CTL_ADD, fd, events: events, token: token)
    }

    func modify(_ fd: Int32, events: UInt32, token: UInt64) {
        control(EPOLL_CTL_MOD, fd, events: events, token: token)
    }

    func remove(_ fd: Int32) {
        control(EPOLL_CTL_DEL, fd, events: 0, token: 0)
    }

    private func control(_ operation: Int32, _ fd: Int32, events: UInt32, token: UInt64) {
        var event = epoll_event()
        event.events = events
        event.data.u64 = token
        _ = epoll_ctl(descriptor, operation, fd, &event)
    }

    /// Waits for events; returns how many were stored in `buffer`.
    func wait(into buffer: UnsafeMutableBufferPointer<epoll_event>, timeoutMilliseconds: Int32) -> Int {
        let count = epoll_wait(descriptor, buffer.baseAddress, Int32(buffer.count), timeoutMilliseconds)
        return count < 0 ? 0 : Int(count)
    }

    /// Makes the current or next `wait` return with `wakeToken`.
    func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeDescriptor, &one, 8)
    }

    /// Clears a wake-up.
    func drainWake() {
        var value: UInt64 = 0
        _ = Glibc.read(wakeDescriptor, &value, 8)
    }
}
