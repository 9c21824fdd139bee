/// One problem found while validating a batch.
public struct ValidationIssue: Sendable, Equatable {
    /// Which task the problem concerns.
    public enum TaskReference: Sendable, Equatable {
        /// The task's id, when it has a usable one.
        case id(String)
        /// The task's zero-based position, when its id is missing or invalid.
        case index(Int)
    }

    /// The task concerned, or `nil` for a problem with the batch as a whole.
    public var task: TaskReference?
    /// The field concerned, such as `depends_on` or `input.ms`.
    public var field: String
    /// What is wrong, for humans.
    public var message: String

    /// Creates an issue.
    public init(task: TaskReference?, field: String, message: String) {
        self.task = task
        self.field = field
        self.message = message
    }
}

/// Why a batch was rejected before any of its tasks ran.
public struct BatchValidationError: Error, Sendable, Equatable {
    /// Every problem found.
    public var issues: [ValidationIssue]
    /// Whether the body was not even well-formed JSON (only one issue is then reported).
    public var isMalformed: Bool

    /// Creates the error.
    public init(issues: [ValidationIssue], isMalformed: Bool) {
        self.issues = issues
        self.isMalformed = isMalformed
    }
}
