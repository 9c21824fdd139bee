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

    init(tasks: [BatchTask], concurrency: Int, timeout: Duration, errorPolicy: ErrorPolicy) {
        self.tasks = tasks
        var dependents = [[Int]](repeating: [], count: tasks.count)
        for (index, task) in tasks.enumerated() {
            for dependency in task.dependencies { dependents[dependency].append(index) }
        }
        self.dependents = dependents
        self.concurrency = concurrency
        self.timeout = timeout
        self.errorPolicy = errorPolicy
        hasWaitingTasks = tasks.contains { !$0.isInstant }
    }
}

/// One validated task of a ``Batch``.
public struct BatchTask: Sendable {
    /// The client's id for the task.
    public let id: String
    /// The operation's work, bound to its decoded input.
    let work: PreparedTask
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
