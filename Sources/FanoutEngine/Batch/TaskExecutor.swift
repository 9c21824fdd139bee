/// Runs one prepared operation under its timeout, turning everything it can do into a
/// ``TaskOutcome``.
public enum TaskExecutor {
    /// Runs `work`, stopping it when `timeout` passes.
    ///
    /// - Parameters:
    ///   - work: the operation bound to its input.
    ///   - timeout: the task's limit, or `nil` for none: for an instant operation, which a timer
    ///     could not interrupt anyway, or when something else (the batch deadline) stops it first.
    /// - Returns: the outcome; `.interrupted` when the calling task was cancelled first.
    public static func run(_ work: PreparedTask, timeout: Duration?) async -> TaskOutcome {
        guard let timeout else { return await outcome(of: work) }
        // Race the operation against a timer; whichever finishes first cancels the other.
        return await withTaskGroup(of: TaskOutcome?.self) { group in
            group.addTask { await outcome(of: work) }
            group.addTask {
                do {
                    try await DeadlineScheduler.shared.sleep(for: timeout)
                } catch {
                    return nil  // cancelled: the operation finished first, or the caller was cancelled
                }
                return .failed(timeoutError(timeout))
            }
            var result: TaskOutcome = .interrupted
            while let next = await group.next() {
                guard let next else { continue }
                result = next
                break
            }
            group.cancelAll()
            return result
        }
    }

    private static func outcome(of work: PreparedTask) async -> TaskOutcome {
        do {
            return .succeeded(try await work.run())
        } catch {
            return outcome(of: .failure(error))
        }
    }

    /// What an operation's result means for its task.
    static func outcome(of result: Result<RawJSON, any Error>) -> TaskOutcome {
        do {
            return .succeeded(try result.get())
        } catch let error as OperationError {
            return .failed(TaskError(code: error.code, message: error.message, details: error.details))
        } catch let error as InputError {
            let field = error.path.map { "input.\($0) " } ?? ""
            return .failed(TaskError(code: "invalid_input", message: field + error.message))
        } catch {
            if error is CancellationError || Task.isCancelled { return .interrupted }
            // Anything else may carry internal details: report only that the operation failed.
            return .failed(TaskError(code: "operation_failed", message: "the operation failed"))
        }
    }

    static func timeoutError(_ timeout: Duration) -> TaskError {
        TaskError(code: "timeout", message: "task exceeded \(describe(timeout))")
    }

    static func describe(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return "\(seconds * 1000 + attoseconds / 1_000_000_000_000_000) ms"
    }
}
