/// A validated batch, ready to run: every input decoded, every dependency resolved, no cycles.
public struct Batch: Sendable {
    /// The tasks, in request order.
    public let tasks: [BatchTask]
    /// For each task, the indices of the tasks that depend on it.
    let dependents: [[Int]]
    /// How many tasks may run at once.
    public let concurrency: Int
    /// The deadline for the whole batch, from when it starts.
    public let timeout: Duration
    /// What a failing task does to the rest.
    public let errorPolicy: ErrorPolicy
    /// Whether any task's operation may wait (is not instant).
    let hasWaitingTasks: Bool
    /// Whether every task's operation runs synchronously, so that ``BatchRunner/runAtOnce(_:)``
    /// can run the batch without an asynchronous call.
    public let runsAtOnce: Bool

    init(tasks: [BatchTask], concurrency: Int, timeout: Duration, errorPolicy: ErrorPolicy) {
        self.tasks = tasks
        var dependents = [[Int]](repeating: [], count: tasks.count)
        var hasWaitingTasks = false
        var runsAtOnce = true
        // One pass, by index: iterating the tasks by value copied each (a retain per reference
        // it holds, a tenth of decoding a batch of echoes).
        for index in tasks.indices {
            for dependency in tasks[index].dependencies { dependents[dependency].append(index) }
            if !tasks[index].isInstant { hasWaitingTasks = true }
            if runsAtOnce {
                runsAtOnce =
                    tasks[index].work?.isSynchronous ?? tasks[index].deferredInput?.operation.isSynchronous ?? false
            }
        }
        self.dependents = dependents
        self.concurrency = concurrency
        self.timeout = timeout
        self.errorPolicy = errorPolicy
        self.hasWaitingTasks = hasWaitingTasks
        self.runsAtOnce = runsAtOnce
    }
}

/// One validated task of a ``Batch``.
public struct BatchTask: Sendable {
    /// The client's id for the task.
    public let id: String
    /// The operation's name (the registry's copy of it: tasks of one operation share it).
    public let operation: String
    /// The operation's work, bound to its decoded input; `nil` when the input has references,
    /// which are filled in just before the task starts (see ``deferredInput``).
    let work: PreparedTask?
    /// The input and operation of a task whose input has references.
    let deferredInput: DeferredInput?
    /// Whether the operation runs inline (see ``Operation/isInstant``).
    let isInstant: Bool
    /// Indices of the tasks that must succeed before this one starts.
    public let dependencies: [Int]
    /// The longest the task may run.
    public let timeout: Duration
}

/// What a failing task does to the rest of its batch.
public enum ErrorPolicy: String, Sendable {
    /// Other tasks go on; only the failed task's dependents are skipped.
    case `continue`
    /// The first failure cancels everything not yet finished.
    case stop
}

/// A task input that references other tasks' outputs, prepared only once they are known.
///
/// A class: a batch task stays one pointer wider, not four.
final class DeferredInput: Sendable {
    let template: InputTemplate
    let operation: AnyOperation
    let context: RequestContext
    /// The largest the input may grow to once filled in.
    let maximumBytes: Int

    init(template: InputTemplate, operation: AnyOperation, context: RequestContext, maximumBytes: Int) {
        self.template = template
        self.operation = operation
        self.context = context
        self.maximumBytes = maximumBytes
    }

    /// The work with every reference filled in from `output`, or why it cannot start:
    /// `reference_unresolved` (nothing there, or a value the operation does not accept) or
    /// `input_too_large`.
    func prepare(output: (Int) -> RawJSON?) -> Result<PreparedTask, TaskError> {
        template.render(output: output, maximumBytes: maximumBytes).flatMap { input -> Result<PreparedTask, TaskError> in
            do throws(InputError) {
                return .success(try operation.prepare(input, context: context))
            } catch {
                return .failure(
                    TaskError(
                        code: "reference_unresolved",
                        message: "with its references filled in, \(InputError.field(error.path)) \(error.message)"))
            }
        }
    }
}
