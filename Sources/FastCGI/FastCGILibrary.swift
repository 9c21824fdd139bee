import CFastCGI

#if canImport(Glibc)
    import Glibc
#endif

/// Process-wide libfcgi set-up.
enum FastCGILibrary {
    static func initialize() {
        _ = FCGX_Init()
        // FCGX_Init installs a SIGPIPE handler; ignoring the signal instead makes a write to a
        // vanished peer fail with EPIPE, which the transport handles, without interrupting anything.
        signal(SIGPIPE, SIG_IGN)
    }
}
