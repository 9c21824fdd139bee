/// A failure an operation reports on purpose, with a stable machine-readable code.
///
/// It becomes the task's `error` object: `{"code": code, "message": message}`.
public struct OperationError: Error, Sendable, Equatable {
    /// A stable, machine-readable code such as `"not_found"`.
    public var code: String
    /// What went wrong, for humans.
    public var message: String

    /// Creates an operation error.
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}
