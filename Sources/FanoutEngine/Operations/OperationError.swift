/// A failure an operation reports on purpose, with a stable machine-readable code.
///
/// It becomes the task's `error` object: `{"code": code, "message": message}`.
public struct OperationError: Error, Sendable, Equatable {
    /// A stable, machine-readable code such as `"not_found"`.
    public var code: String
    /// What went wrong, for humans.
    public var message: String
    /// More members for the task's error object (a JSON object), such as the `http` operation's
    /// `attempts` and `response`.
    public var details: RawJSON?

    /// Creates an operation error.
    public init(code: String, message: String, details: RawJSON? = nil) {
        self.code = code
        self.message = message
        self.details = details
    }
}
