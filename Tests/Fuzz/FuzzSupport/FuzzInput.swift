#if canImport(Glibc)
    import Glibc
#endif

/// The bytes of one fuzzer input, split into the parts a target needs.
public struct FuzzInput {
    /// The whole input.
    public let bytes: [UInt8]

    /// Copies the input libFuzzer hands to `LLVMFuzzerTestOneInput`.
    public init(_ start: UnsafePointer<UInt8>?, _ count: Int) {
        bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    }

    /// The input cut at each zero byte, always `count` parts (missing ones empty): zero never
    /// appears in the text the targets feed on, so the fuzzer learns to place it quickly.
    public func parts(_ count: Int) -> [[UInt8]] {
        var parts = bytes.split(separator: 0, maxSplits: count - 1, omittingEmptySubsequences: false).map(Array.init)
        while parts.count < count { parts.append([]) }
        return parts
    }

    /// The parts as text, with invalid UTF-8 repaired as a network peer's would be.
    public func strings(_ count: Int) -> [String] {
        parts(count).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// Stops the run with `message` when `condition` is false: a broken invariant is a finding,
/// reported by libFuzzer with the input that caused it.
public func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant broken: \(message())") }
}

#if FUZZING
    @_silgen_name("LLVMFuzzerRunDriver")
    private func runDriver(
        _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt
#endif

/// Runs libFuzzer on `test` with the process's arguments, and exits with its status.
///
/// In a build without the fuzzer (`-DFUZZING -sanitize=fuzzer`, as scripts/fuzz.sh builds), says
/// how to build one and exits 64: the target still compiles with the rest of the package.
public func fuzzMain(_ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
    #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(runDriver(&argc, &argv, test))
    #else
        print("a fuzz target: build and run it with `make fuzz`")
        exit(64)
    #endif
}
