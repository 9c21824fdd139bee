/// How a task ended.
public enum TaskStatus: String, Sendable {
    /// The operation returned an output.
    case succeeded
    /// The operation threw or timed out.
    case failed
    /// A dependency did not succeed, so the task never started.
    case skipped
    /// The batch deadline, `on_error: "stop"`, the client going away or shutdown stopped the task
    /// or kept it from starting.
    case cancelled
}

/// A task's error object: a stable machine-readable code and a message for humans.
public struct TaskError: Error, Sendable, Equatable {
    /// A stable code: `timeout`, `operation_failed`, `invalid_input`, `dependency_failed`,
    /// `batch_timeout`, `stopped`, `cancelled`, `shutdown`, or an operation's own code.
    public var code: String
    /// What happened, for humans.
    public var message: String
    /// The members of `details` without their braces, found once here rather than at every write.
    private var detailMembers: [UInt8]?

    /// Creates a task error.
    ///
    /// - Parameter details: more members of the error object, after `code` and `message` (the
    ///   `http` operation's `attempts` and `response`): a JSON object, or `nil` for none.
    public init(code: String, message: String, details: RawJSON? = nil) {
        self.code = code
        self.message = message
        // Kept as one array reference rather than a `RawJSON` (a slice, four words): every task
        // result carries an optional error, and a larger result made every task's copy dearer.
        if let bytes = details?.bytes, let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes.lastIndex(of: UInt8(ascii: "}")), bytes[(open + 1)..<close].contains(where: { $0 > 0x20 })
        {
            detailMembers = Array(bytes[(open + 1)..<close])
        }
    }

    /// Writes `{"code": …, "message": …}` and the members of `details`.
    public func write(to writer: inout JSONWriter) {
        writer.write(upTo: jsonBound) { write(to: &$0) }
    }

    /// The most bytes ``write(to:)-(ByteCursor)`` writes.
    var jsonBound: Int {
        32 + ByteCursor.stringBound(utf8Count: code.utf8.count) + ByteCursor.stringBound(utf8Count: message.utf8.count)
            + (detailMembers?.count ?? 0)
    }

    /// Writes `{"code": …, "message": …}` and the members of `details`.
    func write(to cursor: inout ByteCursor) {
        cursor.raw(#"{"code":"#)
        cursor.string(code)
        cursor.raw(#","message":"#)
        cursor.string(message)
        if let detailMembers {
            cursor.byte(UInt8(ascii: ","))
            detailMembers.withUnsafeBufferPointer { cursor.bytes($0) }
        }
        cursor.byte(UInt8(ascii: "}"))
    }
}

/// The result of one task, as reported to the client.
public struct TaskResult: Sendable {
    /// The task's id.
    public var id: String
    /// How it ended.
    public var status: TaskStatus
    /// The output, for a task that succeeded.
    public var output: RawJSON?
    /// The error, for any other task.
    public var error: TaskError?
    /// How long the task ran; zero for a task that never started.
    public var duration: Duration
}
