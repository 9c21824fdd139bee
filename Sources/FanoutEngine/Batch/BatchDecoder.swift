/// Turns a request body into a validated ``Batch``, or lists every problem that prevents it.
///
/// Nothing runs until the whole batch is known to be valid: the envelope's fields, every task's
/// id, operation and input, and the dependency graph.
public struct BatchDecoder: Sendable {
    private let registry: OperationRegistry
    private let limits: EngineLimits
    private let splitBytes: Int

    /// Creates a decoder that resolves operations in `registry` and enforces `limits`.
    ///
    /// - Parameter splitBytes: from how long a `tasks` array (in bytes) its two halves are
    ///   decoded at once, on two threads; the default is ``defaultSplitBytes``. The result is the
    ///   same either way (tests decode small batches split to check that).
    public init(registry: OperationRegistry, limits: EngineLimits, splitBytes: Int = defaultSplitBytes) {
        self.registry = registry
        self.limits = limits
        self.splitBytes = splitBytes
    }

    /// 24 KiB (about 700 small tasks) on a machine with more than one core, where the second
    /// thread's wake-up, some tens of microseconds, is a small part of what it saves (batches of
    /// 700 and 1,000 echoes spent 15% and 23% less time in the responder, in two runs of three,
    /// than at the 64 KiB this was); never on one core.
    public static let defaultSplitBytes = TwoThreads.areAvailable ? 24 * 1024 : .max

    /// What a task names of other tasks, by id, until the graph is checked: kept apart from the
    /// task table, since few tasks have any.
    private struct Links {
        var index: Int
        var dependencyIds: [String] = []
        /// The tasks its input references, with where each reference sits in the input.
        var referencedIds: [(id: String, field: String)] = []
        /// The input with its references, and the operation it is for, bound to task indices
        /// once the ids are known.
        var template: (template: InputTemplate, operation: AnyOperation)?
    }

    /// The task table as it is read, and what is needed to finish it.
    private struct Reading {
        var tasks: [BatchTask] = []
        var ids: TaskIDs
        var links: [Links] = []
        var hasWaitingTasks = false
        var runsAtOnce = true
        /// The operations the tasks use, in the order first used.
        var operations: [AnyOperation] = []
        /// The ``RawJSONOperation``s among them, by their ``BatchTask/RawWork/operation`` number.
        var rawJSONOperations: [any RawJSONOperation] = []
        /// What the previous task's operation is: batches mostly repeat one, and comparing its
        /// name is cheaper than hashing it for the registry. Plain values, so that a task of the
        /// same operation touches no reference count (shared by both event loops, the registry's
        /// operations were a contended hot spot).
        var last: OperationInfo?
        /// Where the name of `last` lies in the body, when a task named it without escapes: the
        /// next task's name is compared with it there, costing no `String`.
        var lastName: Range<Int>?

        /// How an issue names task `index`: by id once it has a valid one.
        func reference(_ index: Int) -> ValidationIssue.TaskReference {
            ids.hasID(at: index) ? .id(ids[index]) : .index(index)
        }

        init(body: [UInt8], capacity: Int) {
            ids = TaskIDs(body: body)
            tasks.reserveCapacity(capacity)
            ids.reserveCapacity(capacity)
        }
    }

    /// What the decoder needs of an operation for each task.
    private struct OperationInfo {
        /// Its position in ``Reading/operations``.
        var index: Int
        var isInstant: Bool
        var isSynchronous: Bool
        /// Whether it is a ``RawJSONOperation`` that accepts any input.
        var acceptsAnyInput: Bool
        /// Its position in ``Reading/rawJSONOperations``, or -1.
        var rawJSONSlot: Int
    }

    /// Decodes and validates `body`.
    ///
    /// - Parameter context: the request that carried the batch, for operations that read it.
    /// - Throws: ``BatchValidationError`` listing every problem found.
    public func decode(_ body: [UInt8], context: RequestContext = .none) throws(BatchValidationError) -> Batch {
        var scanner = JSONScanner(bytes: body, maximumDepth: limits.maximumDepth)
        var issues: [ValidationIssue] = []
        do {
            return try decode(&scanner, context: context, issues: &issues)
        } catch let error as JSONScanner.SyntaxError {
            let issue = ValidationIssue(
                task: nil, field: "body", message: "malformed JSON: \(error.message) at byte \(error.offset)")
            throw BatchValidationError(issues: [issue], isMalformed: true)
        } catch let error as BatchValidationError {
            throw error
        } catch {
            preconditionFailure("unexpected error \(error)")
        }
    }

    private func decode(
        _ scanner: inout JSONScanner, context: RequestContext, issues: inout [ValidationIssue]
    ) throws -> Batch {
        guard try scanner.peekKind() == .object else {
            throw BatchValidationError(
                issues: [ValidationIssue(task: nil, field: "body", message: "must be a JSON object")],
                isMalformed: false)
        }
        var reading: Reading?
        var concurrency = limits.maximumConcurrency
        var timeoutMilliseconds = limits.maximumBatchTimeoutMilliseconds
        var errorPolicy = ErrorPolicy.continue
        // The batch's own fields as bits: a set of strings was an allocation for every batch.
        var seenFields: UInt8 = 0
        var seenOtherKeys = Set<String>()

        try scanner.beginObject()
        var first = true
        while let key = try scanner.nextKey(first: first) {
            first = false
            let field: UInt8 =
                switch key {
                case "tasks": 1
                case "concurrency": 2
                case "timeout_ms": 4
                case "on_error": 8
                default: 0
                }
            let isFirst = field == 0 ? seenOtherKeys.insert(key).inserted : seenFields & field == 0
            seenFields |= field
            guard isFirst else {
                issues.append(ValidationIssue(task: nil, field: key, message: "appears more than once"))
                _ = try scanner.skipValue()
                continue
            }
            switch key {
            case "tasks":
                reading = try decodeTasks(&scanner, context: context, issues: &issues)
            case "concurrency":
                if let value = try readPositiveInteger(&scanner) {
                    concurrency = min(value, limits.maximumConcurrency)
                } else {
                    issues.append(ValidationIssue(task: nil, field: key, message: Self.positiveIntegerMessage))
                }
            case "timeout_ms":
                if let value = try readPositiveInteger(&scanner) {
                    timeoutMilliseconds = min(value, limits.maximumBatchTimeoutMilliseconds)
                } else {
                    issues.append(ValidationIssue(task: nil, field: key, message: Self.positiveIntegerMessage))
                }
            case "on_error":
                let policy: ErrorPolicy?
                if try scanner.peekKind() == .string {
                    policy = ErrorPolicy(rawValue: try scanner.readString())
                } else {
                    _ = try scanner.skipValue()
                    policy = nil
                }
                if let policy {
                    errorPolicy = policy
                } else {
                    issues.append(ValidationIssue(task: nil, field: key, message: #"must be "continue" or "stop""#))
                }
            default:
                issues.append(ValidationIssue(task: nil, field: key, message: "is not a batch field"))
                _ = try scanner.skipValue()
            }
        }
        try scanner.finish()

        guard var reading else {
            issues.append(ValidationIssue(task: nil, field: "tasks", message: "is required"))
            throw BatchValidationError(issues: issues, isMalformed: false)
        }
        resolveLinks(&reading, context: context, issues: &issues)
        guard issues.isEmpty else { throw BatchValidationError(issues: issues, isMalformed: false) }
        // Every entry of `links` names at least one task, which a valid batch has resolved.
        return Batch(
            tasks: reading.tasks, ids: reading.ids, operationNames: reading.operations.map(\.name), body: scanner.bytes, rawJSONOperations: reading.rawJSONOperations,
            hasDependencies: !reading.links.isEmpty, hasWaitingTasks: reading.hasWaitingTasks,
            runsAtOnce: reading.runsAtOnce, concurrency: concurrency, timeout: .milliseconds(timeoutMilliseconds),
            errorPolicy: errorPolicy)
    }

    // MARK: Tasks

    private func decodeTasks(
        _ scanner: inout JSONScanner, context: RequestContext, issues: inout [ValidationIssue]
    ) throws -> Reading? {
        guard try scanner.peekKind() == .array else {
            issues.append(ValidationIssue(task: nil, field: "tasks", message: "must be an array of tasks"))
            _ = try scanner.skipValue()
            return nil
        }
        // Room for as many tasks as the body could hold at about 24 bytes each (the shortest task
        // is 23), up to the limit: from empty, ten thousand tasks grew the array fourteen
        // times, copying what it held each time. Pages of an overestimate are never touched.
        var reading = Reading(body: scanner.bytes, capacity: min(limits.maximumTasks, scanner.bytes.count / 24 + 1))
        try scanner.beginArray()
        let count: Int
        if scanner.bytes.count - scanner.position >= splitBytes, let guess = Self.guessSplit(scanner) {
            count = try decodeInTwo(&scanner, splittingAt: guess, into: &reading, context: context, issues: &issues)
        } else {
            count = try decodeElements(&scanner, into: &reading, context: context, issues: &issues).count
        }
        if count == 0 {
            issues.append(ValidationIssue(task: nil, field: "tasks", message: "must contain at least one task"))
        } else if count > limits.maximumTasks {
            issues.append(
                ValidationIssue(
                    task: nil, field: "tasks",
                    message: "has \(count) tasks; at most \(limits.maximumTasks) are allowed"))
        }
        return reading
    }

    /// Decodes the tasks from the scanner's position to the array's end into `reading`.
    ///
    /// - Parameters:
    ///   - atElement: whether the scanner is at an element (after its comma), not before one.
    ///   - counted: how many elements came before (`reading` holds them, up to the task limit).
    ///   - stop: a position where another thread has begun to decode the rest: when an element
    ///     starts there (right after its comma), decoding stops, with `stopped` true.
    /// - Returns: how many elements the array has up to where decoding ended, those counted
    ///   before included.
    private func decodeElements(
        _ scanner: inout JSONScanner, into reading: inout Reading, atElement: Bool = false, counted: Int = 0,
        stop: Int = .max, context: RequestContext, issues: inout [ValidationIssue]
    ) throws -> (count: Int, stopped: Bool) {
        var count = counted
        var atElement = atElement
        while true {
            if atElement {
                atElement = false
            } else {
                guard try scanner.nextElement(first: count == 0) else { break }
                if scanner.position == stop { return (count, true) }
            }
            // Past the limit, keep checking the syntax but stop collecting tasks.
            if count < limits.maximumTasks {
                try decodeTask(&scanner, into: &reading, context: context, issues: &issues)
            } else {
                _ = try scanner.skipValue()
            }
            count += 1
        }
        return (count, false)
    }

    /// Where the second half of a long tasks array may start: right after the first comma past
    /// the middle of the body that has a `}` before it and a `{` after it (white space aside).
    ///
    /// Only a guess, found without reading what comes before: the comma may be inside a string.
    /// The first half's decoding, which does read everything before it, tells.
    static func guessSplit(_ scanner: JSONScanner) -> Int? {
        scanner.bytes.withUnsafeBufferPointer { bytes -> Int? in
            func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }
            var index = scanner.position + (bytes.count - scanner.position) / 2
            while index < bytes.count {
                guard let comma = bytes[index...].firstIndex(of: UInt8(ascii: ",")) else { return nil }
                index = comma + 1
                var before = comma - 1
                while before > scanner.position, isSpace(bytes[before]) { before -= 1 }
                guard bytes[before] == UInt8(ascii: "}") else { continue }
                var after = comma + 1
                while after < bytes.count, isSpace(bytes[after]) { after += 1 }
                if after < bytes.count, bytes[after] == UInt8(ascii: "{") { return comma + 1 }
            }
            return nil
        }
    }

    /// Decodes a long tasks array in two halves at once: from `guess` (see ``guessSplit(_:)``)
    /// on another thread, and up to it on this one. Leaves `scanner` after the array, and
    /// returns the number of tasks.
    ///
    /// The batch, its issues and its first syntax error are those of decoding it in one piece:
    /// when no element starts at `guess`, or the batch has more tasks than allowed, this thread
    /// decodes the rest itself and the other's work is dropped.
    private func decodeInTwo(
        _ scanner: inout JSONScanner, splittingAt guess: Int, into reading: inout Reading, context: RequestContext,
        issues: inout [ValidationIssue]
    ) throws -> Int {
        // The second half reads its own copy of the body: both threads retaining and releasing
        // one array's reference count, once or more per task, made each half slower than the
        // whole batch had been on one thread.
        var secondScanner = scanner.withCopiedBytes(startingAt: guess)
        var second = Reading(
            body: secondScanner.bytes, capacity: min(limits.maximumTasks, (scanner.bytes.count - guess) / 24 + 1))
        var secondIssues: [ValidationIssue] = []
        // Each half writes only its own variables (see `TwoThreads`).
        var first: Result<(count: Int, stopped: Bool), any Error> = .success((0, false))
        var secondCount: Result<Int, any Error> = .success(0)
        TwoThreads.run {
            first = Result {
                try decodeElements(&scanner, into: &reading, stop: guess, context: context, issues: &issues)
            }
        } and: {
            secondCount = Result {
                try decodeElements(
                    &secondScanner, into: &second, atElement: true, context: context, issues: &secondIssues
                ).count
            }
        }
        let (count, stopped) = try first.get()
        guard stopped else { return count }  // a wrong guess: this thread has read everything
        let total = count + (try secondCount.get())
        guard total <= limits.maximumTasks else {
            // Too many tasks: which are kept and which reported is decided in order.
            return try decodeElements(
                &scanner, into: &reading, atElement: true, counted: count, context: context, issues: &issues
            ).count
        }
        join(second, issues: secondIssues, after: count, to: &reading, issues: &issues)
        scanner.resume(after: secondScanner)
        return total
    }

    /// Appends the second half of a batch decoded in two, whose tasks it numbered from 0, to the
    /// first, of `offset` tasks.
    private func join(
        _ second: Reading, issues secondIssues: [ValidationIssue], after offset: Int, to first: inout Reading,
        issues: inout [ValidationIssue]
    ) {
        // Each half numbered the operations, and the raw-JSON operations, it met in its own
        // order: the second's, where they differ, are renumbered in the first's.
        var numbers: [Int] = []
        var slots: [Int] = []
        for operation in second.operations {
            let index = first.operations.firstIndex { $0 === operation } ?? first.operations.count
            if index == first.operations.count { first.operations.append(operation) }
            numbers.append(index)
            guard let raw = operation.rawJSONOperation else { continue }
            let slot = first.operations[..<index].filter { $0.rawJSONOperation != nil }.count
            if slot == first.rawJSONOperations.count { first.rawJSONOperations.append(raw) }
            slots.append(slot)
        }
        if numbers.indices.elementsEqual(numbers), slots.indices.elementsEqual(slots) {
            first.tasks.append(contentsOf: second.tasks)
        } else {
            var tasks = second.tasks
            for index in tasks.indices {
                tasks[index].operationNumber = Int32(numbers[Int(tasks[index].operationNumber)])
                guard let raw = tasks[index].rawWork else { continue }
                tasks[index].rawWork = BatchTask.RawWork(operation: slots[raw.operation], input: raw.input)
            }
            first.tasks.append(contentsOf: tasks)
        }
        first.ids.append(contentsOf: second.ids)
        for var links in second.links {
            links.index += offset
            first.links.append(links)
        }
        first.hasWaitingTasks = first.hasWaitingTasks || second.hasWaitingTasks
        first.runsAtOnce = first.runsAtOnce && second.runsAtOnce
        // Issues name a task without a valid id by its position, once as `tasks[i]`.
        for var issue in secondIssues {
            if case .index(let index) = issue.task {
                issue.task = .index(index + offset)
                if issue.field == "tasks[\(index)]" { issue.field = "tasks[\(index + offset)]" }
            }
            issues.append(issue)
        }
    }

    /// Which task field a key names, from its raw bytes: 0 `id`, 1 `op`, 2 `input`,
    /// 3 `depends_on`, 4 `timeout_ms` (the bits of `seenKeys`), or -1.
    ///
    /// Compared as little-endian words rather than against a table of names: a shared table's
    /// reference count, touched for every key of every task on both event loops, was a contended
    /// hot spot, and comparing byte by byte was a twelfth of decoding a batch of echoes.
    static func taskField(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        let raw = UnsafeRawBufferPointer(key)
        func word<Word: FixedWidthInteger>(at offset: Int, _: Word.Type) -> Word {
            Word(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Word.self))
        }
        switch key.count {
        case 2:
            switch word(at: 0, UInt16.self) {
            case 0x6469: return 0  // "id"
            case 0x706F: return 1  // "op"
            default: return -1
            }
        case 5:
            return word(at: 0, UInt32.self) == 0x7570_6E69 && key[4] == UInt8(ascii: "t") ? 2 : -1  // "inpu" "t"
        case 10:
            let tail = word(at: 8, UInt16.self)
            switch word(at: 0, UInt64.self) {
            case 0x5F73_646E_6570_6564: return tail == 0x6E6F ? 3 : -1  // "depends_" "on"
            case 0x5F74_756F_656D_6974: return tail == 0x736D ? 4 : -1  // "timeout_" "ms"
            default: return -1
            }
        default: return -1
        }
    }

    /// A task field's name, for messages.
    private static func taskFieldName(_ field: Int) -> String {
        switch field {
        case 0: "id"
        case 1: "op"
        case 2: "input"
        case 3: "depends_on"
        default: "timeout_ms"
        }
    }

    /// Reads one task into the table (appending it, valid or not, so that positions match).
    private func decodeTask(
        _ scanner: inout JSONScanner, into reading: inout Reading, context: RequestContext,
        issues: inout [ValidationIssue]
    ) throws {
        let index = reading.tasks.count
        // Written into the table at once, and filled in there: a task built aside and then
        // appended was copied, every reference it holds retained and released once more.
        reading.tasks.append(BatchTask())
        reading.ids.appendNone()
        guard try scanner.peekKind() == .object else {
            issues.append(ValidationIssue(task: .index(index), field: "tasks[\(index)]", message: "must be an object"))
            _ = try scanner.skipValue()
            return
        }
        // Issues are collected locally first: they name the task by id, known only at the end.
        var fieldIssues: [(field: String, message: String)] = []
        // Where the name lies, and the name itself only when it has escapes.
        var operationName: (content: Range<Int>, decoded: String?)?
        // Where the input lies: made a `RawJSON` (which retains the body) only if needed.
        var inputRange: Range<Int>?
        var timeoutMilliseconds: Int?
        var dependencyIds: [String] = []
        var seenKeys: UInt8 = 0

        try scanner.beginObject()
        var first = true
        var otherKey = ""
        while let field = try scanner.nextKey(first: first, otherKey: &otherKey, match: Self.taskField) {
            first = false
            guard field >= 0 else {
                fieldIssues.append((otherKey, "is not a task field"))
                _ = try scanner.skipValue()
                continue
            }
            // Its name only for a message: making the string for every key of every task was
            // a few percent of decoding.
            var key: String { Self.taskFieldName(field) }
            let bit = UInt8(1) << field
            guard seenKeys & bit == 0 else {
                fieldIssues.append((key, "appears more than once"))
                _ = try scanner.skipValue()
                continue
            }
            seenKeys |= bit
            switch field {
            case 0:  // id
                guard try scanner.peekKind() == .string else {
                    fieldIssues.append((key, "must be a string"))
                    _ = try scanner.skipValue()
                    continue
                }
                let (content, decoded) = try scanner.readStringInPlace()
                // Scalars are never more than UTF-8 bytes: count them only for a long id.
                let bytes = decoded?.utf8.count ?? content.count
                let length =
                    bytes <= limits.maximumIdLength
                    ? bytes : decoded?.unicodeScalars.count ?? Self.scalarCount(scanner.bytes, content)
                if length == 0 || length > limits.maximumIdLength {
                    fieldIssues.append((key, "must be 1 to \(limits.maximumIdLength) characters long"))
                } else if let decoded {
                    reading.ids.setID(at: index, decoded: decoded)
                } else {
                    reading.ids.setID(at: index, inBody: content)
                }
            case 1:  // op
                guard try scanner.peekKind() == .string else {
                    fieldIssues.append((key, "must be a string"))
                    _ = try scanner.skipValue()
                    continue
                }
                operationName = try scanner.readStringInPlace()
            case 2:  // input
                inputRange = try scanner.skipValue()
            case 3:  // depends_on
                guard try scanner.peekKind() == .array else {
                    fieldIssues.append((key, "must be an array of task ids"))
                    _ = try scanner.skipValue()
                    continue
                }
                try scanner.beginArray()
                var firstDependency = true
                while try scanner.nextElement(first: firstDependency) {
                    firstDependency = false
                    if try scanner.peekKind() == .string {
                        dependencyIds.append(try scanner.readString())
                    } else {
                        fieldIssues.append((key, "must contain only task ids (strings)"))
                        _ = try scanner.skipValue()
                    }
                }
            default:  // "timeout_ms"
                timeoutMilliseconds = try readPositiveInteger(&scanner)
                if timeoutMilliseconds == nil { fieldIssues.append((key, Self.positiveIntegerMessage)) }
            }
        }
        // Kept as 32 bits: past 24 days (a maximum no operator sets), the limit is 24 days.
        reading.tasks[index].timeoutMilliseconds = Int32(
            clamping: min(timeoutMilliseconds ?? Int.max, limits.maximumTaskTimeoutMilliseconds))

        // Made only for the few tasks that name others.
        var links = dependencyIds.isEmpty ? nil : Links(index: index, dependencyIds: dependencyIds)
        if seenKeys & 1 == 0 { fieldIssues.append(("id", "is required")) }
        if let (content, decoded) = operationName {
            let isLast =
                decoded == nil && reading.lastName.map { Self.sameBytes(scanner.bytes, $0, content) } ?? false
            let name = isLast ? "" : decoded ?? String(decoding: scanner.bytes[content], as: UTF8.self)
            if let operation = isLast ? reading.last : lookUp(name, &reading) {
                reading.last = operation
                reading.lastName = decoded == nil ? content : nil
                reading.tasks[index].isInstant = operation.isInstant
                reading.tasks[index].operationNumber = Int32(operation.index)
                if !operation.isInstant { reading.hasWaitingTasks = true }
                if !operation.isSynchronous { reading.runsAtOnce = false }
                if operation.rawJSONSlot >= 0, let inputRange, scanner.bytes.count <= Int32.max,
                    !scanner.bytes.withUnsafeBufferPointer({
                        InputTemplate.mayHaveReferences(UnsafeBufferPointer(rebasing: $0[inputRange]))
                    })
                {
                    // The input stays where it is in the body (see `BatchTask.RawWork`).
                    do {
                        if !operation.acceptsAnyInput {
                            let input = RawJSON(trusted: scanner.bytes[inputRange])
                            try reading.rawJSONOperations.withUnsafeBufferPointer { operations throws(InputError) in
                                try operations[operation.rawJSONSlot].validateInput(input, context: context)
                            }
                        }
                        reading.tasks[index].rawWork = BatchTask.RawWork(operation: operation.rawJSONSlot, input: inputRange)
                    } catch {
                        fieldIssues.append((InputError.field(error.path), error.message))
                    }
                } else {
                    var taskLinks = links ?? Links(index: index)
                    prepare(
                        inputRange.map { RawJSON(trusted: scanner.bytes[$0]) }, of: reading.operations[operation.index],
                        context: context,
                        into: &reading.tasks[index], links: &taskLinks, fieldIssues: &fieldIssues)
                    if taskLinks.template != nil { links = taskLinks }
                }
            } else {
                fieldIssues.append(("op", "unknown operation '\(name)'; GET /ops lists them"))
            }
        } else if seenKeys & 2 == 0 {
            fieldIssues.append(("op", "is required"))
        }
        if let links { reading.links.append(links) }
        guard !fieldIssues.isEmpty else { return }
        let reference = reading.reference(index)
        for (field, message) in fieldIssues {
            issues.append(ValidationIssue(task: reference, field: field, message: message))
        }
    }

    /// How many Unicode scalars the valid UTF-8 at `range` of `bytes` holds: its bytes that do
    /// not continue a sequence.
    private static func scalarCount(_ bytes: [UInt8], _ range: Range<Int>) -> Int {
        bytes[range].reduce(0) { count, byte in byte & 0xC0 == 0x80 ? count : count + 1 }
    }

    /// Whether `bytes` holds the same bytes at `one` as at `other`.
    private static func sameBytes(_ bytes: [UInt8], _ one: Range<Int>, _ other: Range<Int>) -> Bool {
        one.count == other.count
            && bytes.withUnsafeBufferPointer {
                UnsafeBufferPointer(rebasing: $0[one]).elementsEqual(UnsafeBufferPointer(rebasing: $0[other]))
            }
    }

    /// The operation called `name`, noted in `reading`; `nil` when there is none.
    private func lookUp(_ name: String, _ reading: inout Reading) -> OperationInfo? {
        guard let operation = registry[name] else { return nil }
        let index = reading.operations.firstIndex { $0 === operation } ?? reading.operations.count
        if index == reading.operations.count { reading.operations.append(operation) }
        var rawJSONSlot = -1
        if let raw = operation.rawJSONOperation {
            // Numbered in the order first used, as `operations` are.
            rawJSONSlot = reading.operations[..<index].filter { $0.rawJSONOperation != nil }.count
            if rawJSONSlot == reading.rawJSONOperations.count { reading.rawJSONOperations.append(raw) }
        }
        return OperationInfo(
            index: index, isInstant: operation.isInstant,
            isSynchronous: operation.isSynchronous, acceptsAnyInput: operation.rawJSONOperation?.acceptsAnyInput ?? false,
            rawJSONSlot: rawJSONSlot)
    }

    /// Decodes a task's input, or, when it references other tasks, checks what can be checked
    /// before they have run and keeps it for later (in `links`).
    private func prepare(
        _ input: RawJSON?, of operation: AnyOperation, context: RequestContext, into task: inout BatchTask,
        links: inout Links, fieldIssues: inout [(field: String, message: String)]
    ) {
        func prepareNow(_ input: RawJSON) {
            do {
                task.work = try operation.prepare(input, context: context)
            } catch {
                fieldIssues.append((InputError.field(error.path), error.message))
            }
        }
        // Nearly every input: no references to look for.
        guard let input, InputTemplate.mayHaveReferences(input) else {
            prepareNow(input ?? .null)
            return
        }
        let (template, templateIssues) = InputTemplate.parse(input)
        for issue in templateIssues {
            fieldIssues.append((InputError.field(issue.path), issue.message))
        }
        guard templateIssues.isEmpty else { return }
        guard let template, !template.references.isEmpty else {
            // No references: only literals to unwrap, or a '$' in some string.
            prepareNow(template.flatMap { try? $0.render(output: { _ in nil }).get() } ?? input)
            return
        }
        for reference in template.references {
            let field = InputError.field(reference.path)
            let topLevel = reference.path.map { String($0.prefix { $0 != "." && $0 != "[" }) }
            if !operation.fieldsWithoutReferences.isEmpty,
                topLevel.map(operation.fieldsWithoutReferences.contains) ?? true
            {
                fieldIssues.append((field, "cannot be a reference for operation '\(operation.name)'"))
                continue
            }
            links.referencedIds.append((reference.taskID, field))
        }
        // Everything but the referenced values can be checked now: with `null` in their place,
        // only problems at or inside a reference's place are left for later.
        do {
            _ = try operation.prepare(template.placeholderInput(), context: context)
        } catch {
            let waitsForReference = template.references.contains { reference in
                guard let referencePath = reference.path else { return true }
                guard let path = error.path else { return false }
                return path == referencePath || path.hasPrefix(referencePath + ".")
                    || path.hasPrefix(referencePath + "[")
            }
            if !waitsForReference {
                fieldIssues.append((InputError.field(error.path), error.message))
            }
        }
        links.template = (template, operation)
    }

    private static let positiveIntegerMessage = "must be a positive integer"

    /// Consumes the next value; returns it when it is a positive integer, `nil` otherwise. Past
    /// 10^15 it returns 10^15: every use caps it far lower, and any integer is schema-valid.
    private func readPositiveInteger(_ scanner: inout JSONScanner) throws -> Int? {
        guard try scanner.peekKind() == .number else {
            _ = try scanner.skipValue()
            return nil
        }
        let value = try scanner.readNumber()
        guard value >= 1, value.rounded() == value else { return nil }
        return value > 1e15 ? 1_000_000_000_000_000 : Int(value)
    }

    // MARK: Graph

    /// Reports every id used by more than one task, naming the later ones; returns where each
    /// id is (its first task).
    private func reportDuplicateIds(_ ids: TaskIDs, issues: inout [ValidationIssue]) -> TaskIDLookup {
        TaskIDLookup(ids) { index, previous in
            issues.append(
                ValidationIssue(
                    task: .index(index), field: "id",
                    message: "duplicate id '\(ids[index])' (also used by task \(previous))"))
        }
    }

    /// Resolves dependency and reference ids to positions, binds the inputs with references, and
    /// reports duplicate ids, unknown or self dependencies, and cycles.
    private func resolveLinks(_ reading: inout Reading, context: RequestContext, issues: inout [ValidationIssue]) {
        let indexById = reportDuplicateIds(reading.ids, issues: &issues)
        var graphIsComplete = true
        for links in reading.links {
            let index = links.index
            let task = reading.reference(index)
            var dependencies: [Int] = []
            var seen = Set<Int>()
            // A reference implies a dependency on the task it reads.
            let named =
                links.referencedIds.map { ($0.id, $0.field, true) } + links.dependencyIds.map { ($0, "depends_on", false) }
            for (id, field, isReference) in named {
                guard let target = indexById[id] else {
                    let message = isReference ? "references unknown task id '\(id)'" : "unknown task id '\(id)'"
                    issues.append(ValidationIssue(task: task, field: field, message: message))
                    graphIsComplete = false
                    continue
                }
                if target == index || reading.ids.withUTF8(at: index, { $0.elementsEqual(id.utf8) }) {
                    let message = isReference ? "a task cannot reference its own output" : "a task cannot depend on itself"
                    issues.append(ValidationIssue(task: task, field: field, message: message))
                    graphIsComplete = false
                    continue
                }
                if seen.insert(target).inserted { dependencies.append(target) }
            }
            reading.tasks[index].dependencies = dependencies
            if let (unbound, operation) = links.template {
                var template = unbound
                template.bind { indexById[$0] }
                reading.tasks[index].deferredInput = DeferredInput(
                    template: template, operation: operation, context: context,
                    maximumBytes: limits.maximumInputBytes)
            }
        }
        if graphIsComplete, !reading.links.isEmpty {
            reportCycles(reading, issues: &issues)
        }
    }

    /// Finds the tasks Kahn's algorithm cannot order and reports each cycle among them once.
    private func reportCycles(_ reading: Reading, issues: inout [ValidationIssue]) {
        let tasks = reading.tasks
        var remaining = tasks.map { $0.dependencies.count }
        var dependents = [[Int]](repeating: [], count: tasks.count)
        for index in tasks.indices {
            for dependency in tasks[index].dependencies { dependents[dependency].append(index) }
        }
        var queue = remaining.indices.filter { remaining[$0] == 0 }
        var head = 0
        while head < queue.count {
            let index = queue[head]
            head += 1
            for dependent in dependents[index] {
                remaining[dependent] -= 1
                if remaining[dependent] == 0 { queue.append(dependent) }
            }
        }
        guard queue.count < tasks.count else { return }

        // Every task left has a dependency that is also left: following them must loop.
        var visited = [Bool](repeating: false, count: tasks.count)
        for start in remaining.indices where remaining[start] > 0 && !visited[start] {
            var path: [Int] = []
            var positionInPath: [Int: Int] = [:]
            var current = start
            while !visited[current] {
                visited[current] = true
                positionInPath[current] = path.count
                path.append(current)
                current = tasks[current].dependencies.first { remaining[$0] > 0 }!
            }
            guard let cycleStart = positionInPath[current] else { continue }  // ran into a cycle already reported
            let cycle = path[cycleStart...] + [current]
            let description = cycle.map { "'\(reading.ids.hasID(at: $0) ? reading.ids[$0] : "#\($0)")'" }.joined(
                separator: " → ")
            issues.append(
                ValidationIssue(
                    task: reading.reference(current), field: "depends_on",
                    message: "dependency cycle: \(description) (each depends on, or references, the next)"))
        }
    }
}
