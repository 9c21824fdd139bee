import Testing

@testable import FastCGI

@Suite("How long an idle event loop waits")
struct EventLoopTimeoutTests {
    @Test("no bound waits for ever; a bound waits at least 1 ms, rounded up, at most Int32.max ms")
    func timeouts() {
        #expect(EventLoop.milliseconds(nil) == -1)
        #expect(EventLoop.milliseconds(.zero) == 1)
        #expect(EventLoop.milliseconds(.nanoseconds(-5)) == 1)
        #expect(EventLoop.milliseconds(.nanoseconds(1)) == 1)
        #expect(EventLoop.milliseconds(.milliseconds(50)) == 50)
        #expect(EventLoop.milliseconds(.microseconds(50_001)) == 51)
        #expect(EventLoop.milliseconds(.seconds(3)) == 3000)
        #expect(EventLoop.milliseconds(.seconds(Int64.max / 2)) == Int32.max)
    }
}
