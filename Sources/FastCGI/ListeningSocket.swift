import CFastCGI

#if canImport(Glibc)
    import Glibc
#endif

/// The socket new FastCGI connections arrive on, put in non-blocking mode for the poller.
struct ListeningSocket: ~Copyable {
    let descriptor: Int32
    /// A Unix socket path to remove on close, for sockets this process created.
    private let ownedPath: String?
    /// A description for logs.
    let description: String

    /// Opens the listener: descriptor 0 when spawn-fcgi provided one, otherwise `fallback`.
    init(
        fallback: FastCGIServer.Configuration.Listener?, allowNonLoopback: Bool, backlog: Int32
    ) throws(FastCGIServerError) {
        if fallback == .inherited || (FCGX_IsCGI() == 0) {
            guard FCGX_IsCGI() == 0 else {
                throw .invalidConfiguration("descriptor 0 is not a listening socket (start under spawn-fcgi)")
            }
            descriptor = 0
            ownedPath = nil
            description = "descriptor 0 (from spawn-fcgi)"
        } else {
            switch fallback {
            case .unixSocket(let path, let mode):
                descriptor = try Self.openUnix(path: path, mode: mode, backlog: backlog)
                ownedPath = path
                description = "unix:\(path)"
            case .tcp(let host, let port):
                descriptor = try Self.openTCP(
                    host: host, port: port, allowNonLoopback: allowNonLoopback, backlog: backlog)
                ownedPath = nil
                description = "tcp:\(host):\(port)"
            case .inherited, .none:
                throw .invalidConfiguration(
                    "no listening socket: start under spawn-fcgi, or pass a socket path or a loopback address")
            }
        }
        let flags = fcntl(descriptor, F_GETFL)
        _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
    }

    deinit {
        close(descriptor)
        if let ownedPath { unlink(ownedPath) }
    }

    private static func openUnix(path: String, mode: UInt32, backlog: Int32) throws(FastCGIServerError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw .invalidConfiguration("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: pathBytes)
            buffer[pathBytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        // A socket file left by a dead process is stale: remove it. One that still answers is in use.
        var status = stat()
        if lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK {
            let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let inUse = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, length) == 0 }
            }
            close(probe)
            if inUse {
                close(fd)
                throw .invalidConfiguration("\(path) is in use by another process")
            }
            unlink(path)
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw .system("bind \(path)", code)
        }
        chmod(path, mode_t(mode))
        guard listen(fd, backlog) == 0 else {
            let code = errno
            close(fd)
            throw .system("listen", code)
        }
        return fd
    }

    private static func openTCP(
        host: String, port: Int, allowNonLoopback: Bool, backlog: Int32
    ) throws(FastCGIServerError) -> Int32 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        guard (1...65535).contains(port) else { throw .invalidConfiguration("invalid port \(port)") }
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            throw .invalidConfiguration("invalid IPv4 address \(host)")
        }
        let isLoopback = UInt32(bigEndian: address.sin_addr.s_addr) >> 24 == 127
        guard isLoopback || allowNonLoopback else {
            throw .invalidConfiguration(
                "refusing to listen on \(host): the FastCGI socket must stay on this machine (127.0.0.0/8)")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, backlog) == 0 else {
            let code = errno
            close(fd)
            throw .system("bind \(host):\(port)", code)
        }
        return fd
    }
}
