/// Hard limits that protect the server from oversized or abusive batches.
///
/// Every field has a default suitable for production; the executable lets operators change them.
public struct EngineLimits: Sendable, Equatable {
    /// The most tasks one batch may hold.
    public var maximumTasks: Int = 100_000
    /// The longest task id, in Unicode scalars.
    public var maximumIdLength: Int = 128
    /// The deepest nesting of JSON objects and arrays in a request body, envelope included.
    public var maximumDepth: Int = 64
    /// The longest a task may run; a task's own `timeout_ms` is capped to it, and it is the
    /// default when a task sets none. Also the longest `sleep`.
    public var maximumTaskTimeoutMilliseconds: Int = 60_000
    /// The longest a batch may run; a batch's `timeout_ms` is capped to it, and it is the
    /// default when a batch sets none.
    public var maximumBatchTimeoutMilliseconds: Int = 60_000
    /// The most tasks of one batch that may run at once; a batch's `concurrency` is capped to it,
    /// and it is the default when a batch sets none.
    public var maximumConcurrency: Int = 256
    /// The largest a task's input may grow to once its references are filled in, in bytes; past
    /// it the task fails with `input_too_large` (references can copy one output many times).
    public var maximumInputBytes: Int = 8 * 1024 * 1024

    /// The default limits.
    public init() {}
}
