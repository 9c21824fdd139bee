/// A validated batch, ready to run: every input decoded, every dependency resolved, no cycles.
public struct Batch: Sendable {
    /// The tasks, in request order.
    public let tasks: [BatchTask]
    /// Their ids, by position.
    public let ids: TaskIDs
    /// The names of the operations the tasks use, in the order first used.
    public let operationNames: [String]
    /// The request body, where the inputs of ``RawJSONOperation`` tasks lie.
    let body: [UInt8]
    /// The ``RawJSONOperation``s of those tasks (see ``BatchTask/RawWork``).
    let rawJSONOperations: [any RawJSONOperation]
    /// For each task, the indices of the tasks that depend on it; empty when no task has
    /// dependencies.
    let dependents: [[Int]]
    /// How many tasks may run at once.
    public let concurrency: Int
    /// The deadline for the whole batch, from when it starts.
    public let timeout: Duration
    /// What a failing task does to the rest.
    public let errorPolicy: ErrorPolicy
    /// Whether any task waits for another.
    let hasDependencies: Bool
    /// Whether any task's operation may wait (is not instant).
    let hasWaitingTasks: Bool
    /// Whether every task's operation runs synchronously, so that ``BatchRunner/runAtOnce(_:)``
    /// can run the batch without an asynchronous call.
    public let runsAtOnce: Bool

    /// - Parameters:
    ///   - hasDependencies: whether some task has dependencies.
    ///   - hasWaitingTasks: whether some task's operation is not instant.
    ///   - runsAtOnce: whether every task's operation runs synchronously.
    ///   The decoder knows these of every task as it reads it: asking the tasks again here cost a
    ///   pass that copied each task's work.
    init(
        tasks: [BatchTask], ids: TaskIDs, operationNames: [String], body: [UInt8], rawJSONOperations: [any RawJSONOperation], hasDependencies: Bool,
        hasWaitingTasks: Bool, runsAtOnce: Bool, concurrency: Int, timeout: Duration, errorPolicy: ErrorPolicy
    ) {
        self.tasks = tasks
        self.ids = ids
        self.operationNames = operationNames
        self.body = body
        self.rawJSONOperations = rawJSONOperations
        self.hasDependencies = hasDependencies
        var dependents: [[Int]] = []
        if hasDependencies {
            dependents = Array(repeating: [], count: tasks.count)
            for index in tasks.indices {
                for dependency in tasks[index].dependencies { dependents[dependency].append(index) }
            }
        }
        self.dependents = dependents
        self.concurrency = concurrency
        self.timeout = timeout
        self.errorPolicy = errorPolicy
        self.hasWaitingTasks = hasWaitingTasks
        self.runsAtOnce = runsAtOnce
    }

    /// The name of task `index`'s operation.
    public func operation(of index: Int) -> String {
        operationNames[operationNumber(of: index)]
    }

    /// The position in ``operationNames`` of task `index`'s operation.
    public func operationNumber(of index: Int) -> Int {
        Int(tasks[index].operationNumber)
    }

    /// The indices of the tasks that depend on task `index`.
    func dependents(of index: Int) -> [Int] {
        hasDependencies ? dependents[index] : []
    }
}

/// One validated task of a ``Batch``.
public struct BatchTask: Sendable {
    /// Its operation's position in ``Batch/operationNames``: a number, not the name, so that a
    /// task holds nothing to retain when it is written, copied or freed.
    var operationNumber: Int32 = 0
    /// The operation's work, bound to its decoded input; `nil` for a ``RawJSONOperation`` (see
    /// ``rawWork``) and when the input has references, which are filled in just before the task
    /// starts (see ``deferredInput``).
    var work: PreparedTask?
    /// A ``RawJSONOperation`` task's operation and input, as positions: a task that holds no
    /// reference costs nothing to keep, copy or free.
    var rawWork: RawWork?
    /// The input and operation of a task whose input has references.
    var deferredInput: DeferredInput?
    /// Whether the operation runs inline (see ``Operation/isInstant``).
    var isInstant = false
    /// Indices of the tasks that must succeed before this one starts.
    public internal(set) var dependencies: [Int] = []
    /// The longest the task may run, in milliseconds: a task is kept small, since a batch of
    /// ten thousand writes and reads ten thousand of them.
    var timeoutMilliseconds: Int32 = 0

    /// The longest the task may run.
    public var timeout: Duration { .milliseconds(timeoutMilliseconds) }

    /// Which of the batch's ``Batch/rawJSONOperations`` to run, on which bytes of its body (a
    /// body of 2 GiB or more, far past any sensible limit, is decoded the ordinary way).
    struct RawWork: Sendable {
        private var operationNumber: Int32
        private var start: Int32
        private var end: Int32

        init(operation: Int, input: Range<Int>) {
            operationNumber = Int32(operation)
            start = Int32(input.lowerBound)
            end = Int32(input.upperBound)
        }

        var operation: Int { Int(operationNumber) }
        var input: Range<Int> { Int(start)..<Int(end) }
    }

    init() {}
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
