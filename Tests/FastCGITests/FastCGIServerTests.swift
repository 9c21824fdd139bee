import Dispatch
import FastCGI
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Echoes the body back, reporting what it saw; `/slow` waits 10 s (or until cancelled);
/// `/stream` streams `one`, waits 300 ms, then streams `two`; `/flood` streams 8 MiB in 64 KiB
/// pieces.
private final class TestHandler: FastCGIHandler {
    let cancelled = Mutex(false)

    /// The echo is answered at once; `/slow` waits in a task, and the streams are written from one.
    func answer(_ request: FastCGIRequest) -> FastCGIAnswer {
        if request.path == "/slow" { return .task { await self.slow() } }
        return .response(handleAtOnce(request))
    }

    private func slow() async -> FastCGIResponse {
        do {
            try await Task.sleep(for: .seconds(10))
        } catch {
            cancelled.withLock { $0 = true }
        }
        return FastCGIResponse(status: 200)
    }

    private func handleAtOnce(_ request: FastCGIRequest) -> FastCGIResponse {
        if request.path == "/stream" {
            return FastCGIResponse(status: 200, headers: [("Content-Type", "text/plain")]) { writer in
                await writer.write(Array("one\n".utf8))
                try? await Task.sleep(for: .milliseconds(300))
                await writer.write(Array("two\n".utf8))
            }
        }
        if request.path == "/flood" {
            return FastCGIResponse(status: 200) { writer in
                let piece = [UInt8](repeating: UInt8(ascii: "x"), count: 65536)
                for _ in 0..<128 where await writer.write(piece) {}
            }
        }
        let summary = "method=\(request.method) length=\(request.body.count) tooLarge=\(request.bodyTooLarge)\n"
        return FastCGIResponse(status: 201, headers: [("X-Test", "yes")], body: Array(summary.utf8) + request.body)
    }
}

/// A minimal FastCGI client, speaking the records nginx sends.
private struct FastCGIClient {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else { throw TestFailure("connect failed: \(errno)") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func close() { _ = Glibc.close(fd) }

    static func record(_ type: UInt8, _ content: [UInt8], id: UInt16 = 1) -> [UInt8] {
        [1, type, UInt8(id >> 8), UInt8(id & 0xFF), UInt8(content.count >> 8), UInt8(content.count & 0xFF), 0, 0]
            + content
    }

    static func length(_ count: Int) -> [UInt8] {
        count < 128
            ? [UInt8(count)]
            : [
                UInt8(0x80 | (count >> 24)), UInt8((count >> 16) & 0xFF), UInt8((count >> 8) & 0xFF),
                UInt8(count & 0xFF),
            ]
    }

    /// Sends one request whose body is split into `chunks` records.
    func send(path: String, method: String = "POST", body: [UInt8] = [], chunks: Int = 1, keepConnection: Bool) {
        var bytes = Self.record(1, [0, 1, keepConnection ? 1 : 0, 0, 0, 0, 0, 0])
        var parameters: [UInt8] = []
        for (name, value) in [
            ("REQUEST_METHOD", method), ("DOCUMENT_URI", path), ("CONTENT_LENGTH", "\(body.count)"),
            ("CONTENT_TYPE", "application/octet-stream"),
        ] {
            parameters +=
                Self.length(name.utf8.count) + Self.length(value.utf8.count) + Array(name.utf8) + Array(value.utf8)
        }
        bytes += Self.record(4, parameters) + Self.record(4, [])
        let size = max(1, (body.count + chunks - 1) / chunks)
        var offset = 0
        while offset < body.count {
            let end = min(body.count, offset + min(size, 65535))
            bytes += Self.record(5, Array(body[offset..<end]))
            offset = end
        }
        bytes += Self.record(5, [])
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    private func readExactly(_ count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, count - got) }
            if n <= 0 { return nil }
            got += n
        }
        return buffer
    }

    /// Reads STDOUT records up to END_REQUEST; `nil` if the connection closed first.
    func receive() -> String? {
        var output: [UInt8] = []
        while let header = readExactly(8) {
            let length = Int(header[4]) << 8 | Int(header[5])
            guard let content = readExactly(length + Int(header[6])) else { return nil }
            if header[1] == 6 { output += content.prefix(length) }
            if header[1] == 3 { return String(decoding: output, as: UTF8.self) }
        }
        return nil
    }

    /// Reads STDOUT records up to END_REQUEST, noting when each arrived.
    func receiveTimed() -> [(at: ContinuousClock.Instant, text: String)] {
        var pieces: [(at: ContinuousClock.Instant, text: String)] = []
        while let header = readExactly(8) {
            let length = Int(header[4]) << 8 | Int(header[5])
            guard let content = readExactly(length + Int(header[6])) else { break }
            if header[1] == 6, length > 0 {
                pieces.append((.now, String(decoding: content.prefix(length), as: UTF8.self)))
            }
            if header[1] == 3 { break }
        }
        return pieces
    }

    /// True when the server has closed its side.
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        return read(fd, &byte, 1) == 0
    }
}

private struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs blocking client code off the Swift pool, which the server's handlers need.
private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}

@Suite("FastCGI requests")
struct FastCGIRequestTests {
    @Test("headers are found under nginx's HTTP_ names, whatever their case and dashes")
    func findsHeaders() {
        let request = FastCGIRequest(parameters: [
            "HTTP_IDEMPOTENCY_KEY": "k1", "HTTP_ACCEPT": "application/x-ndjson", "REQUEST_URI": "/batch?x=1",
        ])
        #expect(request.header("Idempotency-Key") == "k1")
        #expect(request.header("accept") == "application/x-ndjson")
        #expect(request.header("Prefer") == nil)
        #expect(request.path == "/batch")
        #expect(request.method == "GET")
    }

    @Test("parameters are found by their exact name; setting one replaces it, nil removes it")
    func parameterTable() {
        var parameters = FastCGIParameters([
            "REQUEST_ID": "abc", "HTTP_X": "1", "EMPTY": "", "A": "é=ü", "HTTP_CONTENT_TYPE": "text/plain",
        ])
        #expect(parameters["REQUEST_ID"] == "abc")
        #expect(parameters["REQUEST_I"] == nil)
        #expect(parameters["REQUEST_IDX"] == nil)
        #expect(parameters["request_id"] == nil)
        #expect(parameters["EMPTY"] == "")
        #expect(parameters["A"] == "é=ü")
        #expect(parameters[""] == nil)
        #expect(parameters.header("x") == "1")
        #expect(parameters.header("Content-Type") == "text/plain")
        #expect(parameters.header("Content_Type") == "text/plain")  // nginx maps both to one name
        #expect(parameters.header("Content-Typ") == nil)
        #expect(parameters.header("") == nil)
        parameters["REQUEST_ID"] = "def"
        #expect(parameters["REQUEST_ID"] == "def")
        parameters["NEW"] = "n"
        #expect(parameters["NEW"] == "n")
        parameters["HTTP_X"] = nil
        #expect(parameters.header("X") == nil)
        #expect(parameters["A"] == "é=ü")
    }
}

@Suite("FastCGI transport", .serialized)
struct FastCGIServerTests {
    private func withServer(
        maximumBodyBytes: Int = 1 << 20, ioThreads: Int = 2, _ body: (String, TestHandler) async throws -> Void
    ) async throws {
        FastCGIServer.initializeLibrary()
        let directory = "/tmp/fanout-fcgi-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(directory, 0o700)
        let path = directory + "/s.sock"
        var configuration = FastCGIServer.Configuration()
        configuration.listener = .unixSocket(path: path, mode: 0o600)
        configuration.maximumBodyBytes = maximumBodyBytes
        configuration.ioThreads = ioThreads
        let handler = TestHandler()
        let server = try FastCGIServer(
            configuration: configuration, handler: handler,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        server.start()
        do {
            try await body(path, handler)
        } catch {
            await server.shutdown(timeout: .seconds(1))
            throw error
        }
        await server.shutdown(timeout: .seconds(1))
        rmdir(directory)
    }

    @Test("bodies spread over many records arrive whole, and kept connections serve request after request")
    func keepsConnectionsAndJoinsRecords() async throws {
        try await withServer { path, _ in
            let body = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let (first, second, stillOpen) = try await blocking { () throws -> (String?, String?, Bool) in
                let client = try FastCGIClient(path: path)
                defer { client.close() }
                client.send(path: "/echo", body: body, chunks: 5, keepConnection: true)
                let first = client.receive()
                client.send(path: "/echo", body: Array("second".utf8), chunks: 1, keepConnection: true)
                let second = client.receive()
                client.send(path: "/echo", keepConnection: true)
                return (first, second, client.receive() != nil)
            }
            let firstText = try #require(first)
            #expect(firstText.hasPrefix("Status: 201 Created\r\nX-Test: yes\r\nContent-Length: "))
            #expect(firstText.contains("method=POST length=100000 tooLarge=false\n"))
            let expected = String(decoding: body, as: UTF8.self)
            #expect(firstText.hasSuffix(expected))
            #expect(try #require(second).hasSuffix("length=6 tooLarge=false\nsecond"))
            #expect(stillOpen)
        }
    }

    @Test("without FCGI_KEEP_CONN the server closes the connection after the response")
    func closesWithoutKeepAlive() async throws {
        try await withServer { path, _ in
            let (response, closed) = try await blocking { () throws -> (String?, Bool) in
                let client = try FastCGIClient(path: path)
                defer { client.close() }
                client.send(path: "/echo", body: Array("x".utf8), keepConnection: false)
                return (client.receive(), client.isClosedByServer())
            }
            #expect(response?.hasSuffix("length=1 tooLarge=false\nx") == true)
            #expect(closed)
        }
    }

    @Test("a body over the limit is discarded and flagged, and the connection stays usable")
    func flagsOversizedBodies() async throws {
        try await withServer(maximumBodyBytes: 1000) { path, _ in
            let (large, next) = try await blocking { () throws -> (String?, String?) in
                let client = try FastCGIClient(path: path)
                defer { client.close() }
                client.send(path: "/echo", body: [UInt8](repeating: 65, count: 5000), chunks: 3, keepConnection: true)
                let large = client.receive()
                client.send(path: "/echo", body: Array("ok".utf8), keepConnection: true)
                return (large, client.receive())
            }
            #expect(large?.contains("length=0 tooLarge=true") == true)
            #expect(next?.hasSuffix("length=2 tooLarge=false\nok") == true)
        }
    }

    @Test("a streamed body reaches the peer piece by piece, and the connection is kept after it")
    func streamsPieces() async throws {
        try await withServer { path, _ in
            let (sent, pieces, next) = try await blocking {
                () throws -> (ContinuousClock.Instant, [(at: ContinuousClock.Instant, text: String)], String?) in
                let client = try FastCGIClient(path: path)
                defer { client.close() }
                let sent = ContinuousClock.now
                client.send(path: "/stream", keepConnection: true)
                let pieces = client.receiveTimed()
                client.send(path: "/echo", body: Array("after".utf8), keepConnection: true)
                return (sent, pieces, client.receive())
            }
            let text = pieces.map(\.text).joined()
            #expect(text.hasPrefix("Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"))
            #expect(!text.contains("Content-Length"))
            #expect(text.hasSuffix("\r\n\r\none\ntwo\n"))
            // "one" is flushed at once, not held until the handler ends 300 ms later.
            let first = try #require(pieces.first { $0.text.contains("one") })
            #expect(first.at - sent < .milliseconds(250))
            #expect(try #require(pieces.last).at - sent >= .milliseconds(300))
            #expect(next?.hasSuffix("length=5 tooLarge=false\nafter") == true)
        }
    }

    @Test("a stream to a peer that does not read holds up no other connection of its loop")
    func slowReaderDoesNotBlockTheLoop() async throws {
        try await withServer(ioThreads: 1) { path, _ in
            let (elapsed, response) = try await blocking { () throws -> (Duration, String?) in
                let stalled = try FastCGIClient(path: path)
                defer { stalled.close() }
                stalled.send(path: "/flood", keepConnection: true)
                usleep(200_000)  // the stream fills the socket buffers and its writer waits
                let other = try FastCGIClient(path: path)
                defer { other.close() }
                let start = ContinuousClock.now
                other.send(path: "/echo", body: Array("hi".utf8), keepConnection: true)
                let response = other.receive()
                return (ContinuousClock.now - start, response)
            }
            #expect(response?.hasSuffix("length=2 tooLarge=false\nhi") == true)
            #expect(elapsed < .seconds(2))
        }
    }

    @Test("a peer that closes while its request runs cancels the handler's task")
    func cancelsWhenPeerLeaves() async throws {
        try await withServer { path, handler in
            try await blocking {
                let client = try FastCGIClient(path: path)
                client.send(path: "/slow", keepConnection: true)
                usleep(200_000)
                client.close()
            }
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(3)
            while !handler.cancelled.withLock({ $0 }), clock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(handler.cancelled.withLock { $0 })
        }
    }
}
