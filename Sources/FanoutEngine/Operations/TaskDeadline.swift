/// The moment the running task must end by: the earlier of its own timeout and its batch's
/// deadline.
///
/// Set by the engine for operations that run in a task of their own (``Operation/run(_:)``), so an
/// operation that waits between attempts can give up at once instead of waiting past it.
public enum TaskDeadline {
    /// The current task's deadline, or `nil` outside a batch.
    @TaskLocal public static var current: ContinuousClock.Instant?
}
