import CFastCGI

#if canImport(Glibc)
    import Glibc
#endif

/// Owns one libfcgi request object and the connection it reads from.
///
/// libfcgi's streams point back into the `FCGX_Request`, so it lives at a stable heap address for
/// the connection's whole life. Every method blocks on the socket: call them only from the
/// transport's own threads.
final class FastCGIConnection: @unchecked Sendable {
    // @unchecked: ownership passes from thread to thread through the server's state; exactly one
    // thread uses a connection at a time.

    /// What reading the next request produced.
    enum ReadResult {
        /// A request with its parameters and body.
        case request(parameters: FastCGIParameters, body: [UInt8], bodyTooLarge: Bool)
        /// The peer closed the connection, or it broke; the descriptor is closed.
        case closed
    }

    private let request: UnsafeMutablePointer<FCGX_Request>
    /// Whether nginx asked to keep the connection open after the current request.
    private var peerWantsKeepAlive = false

    /// Takes ownership of a connected socket.
    init(fileDescriptor: Int32) {
        request = .allocate(capacity: 1)
        // No listening socket: libfcgi must never fall back to a blocking accept of its own.
        FCGX_InitRequest(request, -1, 0)
        request.pointee.ipcFd = fileDescriptor
        // FCGX_Accept_r starts by finishing the previous request, which closes the descriptor
        // unless keepConnection is set; the begin record then sets it to what nginx asked for.
        request.pointee.keepConnection = 1
    }

    deinit {
        if request.pointee.ipcFd >= 0 { close(request.pointee.ipcFd) }
        request.pointee.ipcFd = -1
        FCGX_Free(request, 0)
        request.deallocate()
    }

    /// The connected socket, or -1 once closed.
    var fileDescriptor: Int32 { request.pointee.ipcFd }

    /// Reads the next request's parameters and body.
    ///
    /// - Parameter maximumBodyBytes: bodies larger than this are read and discarded, so that the
    ///   connection stays in step, and reported with `bodyTooLarge`.
    func readRequest(maximumBodyBytes: Int) -> ReadResult {
        // With an open descriptor, FCGX_Accept_r reads the begin record and the parameters from
        // it. At end of input it closes the descriptor and tries to accept on socket -1, which
        // fails at once with EBADF.
        guard FCGX_Accept_r(request) == 0 else { return .closed }
        peerWantsKeepAlive = request.pointee.keepConnection != 0
        // libfcgi's parameter strings die at the next Accept/Finish: copied, in one block.
        let parameters = FastCGIParameters(environment: request.pointee.envp)
        let declaredLength = parameters["CONTENT_LENGTH"].flatMap { Int($0) } ?? 0
        guard let (body, tooLarge) = readBody(declaredLength: declaredLength, limit: maximumBodyBytes) else {
            finish(keepAlive: false)
            return .closed
        }
        return .request(parameters: parameters, body: body, bodyTooLarge: tooLarge)
    }

    /// Writes a complete response and ends the request.
    ///
    /// - Returns: `true` when the connection stays open for another request.
    func respond(head: [UInt8], body: [UInt8]) -> Bool {
        var healthy = write(head)
        if healthy, !body.isEmpty { healthy = write(body) }
        return finish(keepAlive: healthy && peerWantsKeepAlive)
    }

    /// Writes the head of a streamed response and flushes it.
    func beginStream(head: [UInt8]) -> Bool {
        write(head) && flush()
    }

    /// Writes one piece of a streamed body and flushes it, so that it reaches the client now.
    func writeStreamed(_ bytes: [UInt8]) -> Bool {
        write(bytes) && flush()
    }

    /// Ends a streamed response.
    ///
    /// - Returns: `true` when the connection stays open for another request.
    func endStream(healthy: Bool) -> Bool {
        finish(keepAlive: healthy && peerWantsKeepAlive)
    }

    // MARK: Internals

    private func flush() -> Bool {
        FCGX_FFlush(request.pointee.out) == 0 && FCGX_GetError(request.pointee.out) == 0
    }

    /// Reads the body to its end. Returns `nil` when the stream broke.
    private func readBody(declaredLength: Int, limit: Int) -> (body: [UInt8], tooLarge: Bool)? {
        let input = request.pointee.in
        var body: [UInt8] = []
        var tooLarge = declaredLength > limit
        if !tooLarge, declaredLength > 0 {
            // nginx sends exactly CONTENT_LENGTH bytes, in as many records as it likes.
            body = [UInt8](unsafeUninitializedCapacity: declaredLength) { buffer, count in
                count = Int(
                    FCGX_GetStr(
                        UnsafeMutableRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self),
                        Int32(declaredLength), input))
            }
        }
        // Read on to the end of the stream: more than declared still counts against the limit,
        // and a request must be consumed entirely before the next one on a kept connection.
        // On the stack: nginx sends what it declared, so this is usually one call that finds the
        // end (a 16 KiB array here was an allocation and a memset per request).
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 16 * 1024) { scratch in
            while true {
                let count = Int(FCGX_GetStr(scratch.baseAddress, Int32(scratch.count), input))
                if count <= 0 { break }
                if !tooLarge {
                    if body.count + count > limit {
                        tooLarge = true
                        body = []
                    } else {
                        body.append(contentsOf: UnsafeRawBufferPointer(start: scratch.baseAddress, count: count))
                    }
                }
            }
        }
        guard FCGX_GetError(input) == 0 else { return nil }
        return (tooLarge ? [] : body, tooLarge)
    }

    private func write(_ bytes: [UInt8]) -> Bool {
        if bytes.count >= Self.recordWriteThreshold { return flush() && writeRecords(bytes) }
        var offset = 0
        while offset < bytes.count {
            let chunk = min(bytes.count - offset, Int(Int32.max))
            let written = bytes.withUnsafeBufferPointer { buffer in
                FCGX_PutStr(
                    UnsafeRawPointer(buffer.baseAddress! + offset).assumingMemoryBound(to: CChar.self),
                    Int32(chunk), request.pointee.out)
            }
            guard written == chunk else { return false }
            offset += chunk
        }
        return true
    }

    /// From this size on, a body bypasses libfcgi's buffer (see ``writeRecords(_:)``).
    static let recordWriteThreshold = 32 * 1024

    /// The most a FastCGI record holds.
    private static let maximumRecordLength = 65_535

    /// Writes `bytes` as FastCGI stdout records of up to 64 KiB, straight to the socket with one
    /// `writev`: through libfcgi's 8 KiB buffer, the 700 KiB answer of a batch of ten thousand
    /// tasks took 88 system calls and a copy.
    ///
    /// libfcgi's stream must have been flushed first, so that these records follow what it sent;
    /// its end-of-stream record, written by `Finish_r`, follows them. The socket is blocking
    /// (accepted without `O_NONBLOCK`), so only a signal makes a write stop short.
    private func writeRecords(_ bytes: [UInt8]) -> Bool {
        let descriptor = request.pointee.ipcFd
        let requestID = UInt16(truncatingIfNeeded: request.pointee.requestId)
        let recordCount = (bytes.count + Self.maximumRecordLength - 1) / Self.maximumRecordLength
        var headers = [UInt8](repeating: 0, count: recordCount * 8)
        for record in 0..<recordCount {
            let length = min(Self.maximumRecordLength, bytes.count - record * Self.maximumRecordLength)
            // version 1, FCGI_STDOUT, request id, content length (both big-endian), no padding.
            headers[record * 8] = UInt8(FCGI_VERSION_1)
            headers[record * 8 + 1] = UInt8(FCGI_STDOUT)
            headers[record * 8 + 2] = UInt8(requestID >> 8)
            headers[record * 8 + 3] = UInt8(requestID & 0xFF)
            headers[record * 8 + 4] = UInt8(length >> 8)
            headers[record * 8 + 5] = UInt8(length & 0xFF)
        }
        return headers.withUnsafeBytes { headers in
            bytes.withUnsafeBytes { body in
                var pieces: [iovec] = []
                pieces.reserveCapacity(2 * recordCount)
                for record in 0..<recordCount {
                    let offset = record * Self.maximumRecordLength
                    pieces.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: headers.baseAddress! + record * 8), iov_len: 8))
                    pieces.append(
                        iovec(
                            iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress! + offset),
                            iov_len: min(Self.maximumRecordLength, body.count - offset)))
                }
                return Self.writeAll(descriptor, &pieces)
            }
        }
    }

    /// Writes every piece, going on after a short write.
    private static func writeAll(_ descriptor: Int32, _ pieces: inout [iovec]) -> Bool {
        var next = 0
        while next < pieces.count {
            let written = pieces.withUnsafeMutableBufferPointer { pieces in
                writev(descriptor, pieces.baseAddress! + next, Int32(min(pieces.count - next, 1024)))  // IOV_MAX
            }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            var left = written
            while left > 0 {
                if left >= pieces[next].iov_len {
                    left -= pieces[next].iov_len
                    next += 1
                } else {
                    pieces[next].iov_base += left
                    pieces[next].iov_len -= left
                    left = 0
                }
            }
        }
        return true
    }

    /// Ends the request (flushing output and sending END_REQUEST), then keeps or closes the socket.
    @discardableResult
    private func finish(keepAlive: Bool) -> Bool {
        // Tell libfcgi to keep the descriptor whatever nginx asked, so that closing is ours to do:
        // libfcgi's own close lingers up to two seconds in select(), which also writes past its
        // fd_set for descriptors from FD_SETSIZE (1024) on. When the stream failed it still closes
        // by itself; marked detached, it then closes without that shutdown-and-select linger.
        request.pointee.keepConnection = 1
        request.pointee.detached = 1
        FCGX_Finish_r(request)
        let fd = request.pointee.ipcFd
        guard fd >= 0 else { return false }
        if keepAlive { return true }
        close(fd)
        request.pointee.ipcFd = -1
        return false
    }
}
