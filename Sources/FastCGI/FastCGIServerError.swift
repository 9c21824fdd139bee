#if canImport(Glibc)
    import Glibc
#endif

/// Why the transport could not start.
public enum FastCGIServerError: Error, CustomStringConvertible {
    /// A system call failed.
    case system(String, Int32)
    /// The configuration cannot work.
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case .system(let call, let code): "\(call) failed: \(String(cString: strerror(code)))"
        case .invalidConfiguration(let message): message
        }
    }
}
