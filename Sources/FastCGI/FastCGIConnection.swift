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
