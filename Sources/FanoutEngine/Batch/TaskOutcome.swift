/// What running one operation produced, before the batch decides what it means.
public enum TaskOutcome: Sendable {
    /// The operation returned this output.
    case succeeded(RawJSON)
    /// The operation failed; the error says why.
    case failed(TaskError)
    /// The operation was stopped by cancellation from outside the task.
    case interrupted
}
