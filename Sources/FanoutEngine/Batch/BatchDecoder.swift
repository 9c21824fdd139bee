/// Turns a request body into a validated ``Batch``, or lists every problem that prevents it.
///
/// Nothing runs until the whole batch is known to be valid: the envelope's fields, every task's
/// id, operation and input, and the dependency graph.
public struct BatchDecoder: Sendable {
    private let registry: OperationRegistry
    private let limits: EngineLimits

    /// Creates a decoder that resolves operations in `registry` and enforces `limits`.
    public init(registry: OperationRegistry, limits: EngineLimits) {
        self.registry = registry
        self.limits = limits
    }

    /// A task as read from the body, before the graph is checked.
    private struct DraftTask {
        var index: Int
        var id: String?
        var isInstant = false
        var operation = ""
        var work: PreparedTask?
        var deferredInput: (template: InputTemplate, operation: AnyOperation)?
        var dependencyIds: [String] = []
        /// The tasks its input references, with where each reference sits in the input.
        var referencedIds: [(id: String, field: String)] = []
        var timeoutMilliseconds: Int?

        var reference: ValidationIssue.TaskReference { id.map { .id($0) } ?? .index(index) }
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
        var drafts: [DraftTask]?
        var concurrency = limits.maximumConcurrency
        var timeoutMilliseconds = limits.maximumBatchTimeoutMilliseconds
        var errorPolicy = ErrorPolicy.continue
        var seenKeys = Set<String>()

        try scanner.beginObject()
        var first = true
        while let key = try scanner.nextKey(first: first) {
            first = false
            guard seenKeys.insert(key).inserted else {
                issues.append(ValidationIssue(task: nil, field: key, message: "appears more than once"))
                _ = try scanner.skipValue()
                continue
            }
            switch key {
            case "tasks":
                drafts = try decodeTasks(&scanner, context: context, issues: &issues)
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

        guard let drafts else {
            issues.append(ValidationIssue(task: nil, field: "tasks", message: "is required"))
            throw BatchValidationError(issues: issues, isMalformed: false)
        }
        var indexById: [String: Int] = [:]
        let dependencies = resolveDependencies(drafts, indexById: &indexById, issues: &issues)
        guard issues.isEmpty else { throw BatchValidationError(issues: issues, isMalformed: false) }

        var tasks: [BatchTask] = []
        tasks.reserveCapacity(drafts.count)
        // Loops over drafts go by index: iterating the array by value copies every draft.
        for index in drafts.indices {
            let timeout = min(drafts[index].timeoutMilliseconds ?? Int.max, limits.maximumTaskTimeoutMilliseconds)
            var deferredInput: DeferredInput?
            if let (unbound, operation) = drafts[index].deferredInput {
                var template = unbound
                template.bind { indexById[$0] }
                deferredInput = DeferredInput(
                    template: template, operation: operation, context: context,
                    maximumBytes: limits.maximumInputBytes)
            }
            tasks.append(
                BatchTask(
                    id: drafts[index].id!, operation: drafts[index].operation, work: drafts[index].work, deferredInput: deferredInput,
                    isInstant: drafts[index].isInstant, dependencies: dependencies[index],
                    timeout: .milliseconds(timeout)))
        }
        return Batch(
            tasks: tasks, concurrency: concurrency, timeout: .milliseconds(timeoutMilliseconds),
            errorPolicy: errorPolicy)
    }

    // MARK: Tasks

    private func decodeTasks(
        _ scanner: inout JSONScanner, context: RequestContext, issues: inout [ValidationIssue]
    ) throws -> [DraftTask]? {
        guard try scanner.peekKind() == .array else {
            issues.append(ValidationIssue(task: nil, field: "tasks", message: "must be an array of tasks"))
            _ = try scanner.skipValue()
            return nil
        }
        var drafts: [DraftTask] = []
        // Room for as many tasks as the body could hold at about 24 bytes each (the shortest task
        // is 23), up to the limit: from empty, ten thousand drafts grew the array fourteen
        // times, copying what it held each time. Pages of an overestimate are never touched.
        drafts.reserveCapacity(min(limits.maximumTasks, scanner.bytes.count / 24 + 1))
        var count = 0
        var lastOperation: AnyOperation?
        try scanner.beginArray()
        while try scanner.nextElement(first: count == 0) {
            // Past the limit, keep checking the syntax but stop collecting tasks.
            if count < limits.maximumTasks {
                drafts.append(
                    try decodeTask(
                        &scanner, index: count, context: context, lastOperation: &lastOperation, issues: &issues))
            } else {
                _ = try scanner.skipValue()
            }
            count += 1
        }
        if count == 0 {
            issues.append(ValidationIssue(task: nil, field: "tasks", message: "must contain at least one task"))
        } else if count > limits.maximumTasks {
            issues.append(
                ValidationIssue(
                    task: nil, field: "tasks",
                    message: "has \(count) tasks; at most \(limits.maximumTasks) are allowed"))
        }
        return drafts
    }

    /// Which task field a key names, from its raw bytes: 0 `id`, 1 `op`, 2 `input`,
    /// 3 `depends_on`, 4 `timeout_ms` (the bits of `seenKeys`), or -1.
    ///
    /// Compared byte by byte rather than against a table of names: a shared table's reference
    /// count, touched for every key of every task on both event loops, was a contended hot spot.
    private static func taskField(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        func matches(_ name: StaticString) -> Bool {
            name.withUTF8Buffer { name in name.count == key.count && name.elementsEqual(key) }
        }
        switch key.count {
        case 2: return matches("id") ? 0 : matches("op") ? 1 : -1
        case 5: return matches("input") ? 2 : -1
        case 10: return matches("depends_on") ? 3 : matches("timeout_ms") ? 4 : -1
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

    /// - Parameter lastOperation: the previous task's operation: batches mostly repeat one, and
    ///   comparing its name is cheaper than hashing it for the registry.
    private func decodeTask(
        _ scanner: inout JSONScanner, index: Int, context: RequestContext, lastOperation: inout AnyOperation?,
        issues: inout [ValidationIssue]
    ) throws -> DraftTask {
        var draft = DraftTask(index: index)
        guard try scanner.peekKind() == .object else {
            issues.append(ValidationIssue(task: .index(index), field: "tasks[\(index)]", message: "must be an object"))
            _ = try scanner.skipValue()
            return draft
        }
        // Issues are collected locally first: they name the task by id, known only at the end.
        var fieldIssues: [(field: String, message: String)] = []
        var operationName: String?
        // Not `RawJSON.null` up front: that shared value's reference count, bumped by every task
        // on every thread, was a contended hot spot.
        var input: RawJSON?
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
            let key = Self.taskFieldName(field)
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
                let id = try scanner.readString()
                // Scalars are never more than UTF-8 bytes: count them only for a long id.
                let bytes = id.utf8.count
                let length = bytes <= limits.maximumIdLength ? bytes : id.unicodeScalars.count
                if length == 0 || length > limits.maximumIdLength {
                    fieldIssues.append((key, "must be 1 to \(limits.maximumIdLength) characters long"))
                } else {
                    draft.id = id
                }
            case 1:  // op
                guard try scanner.peekKind() == .string else {
                    fieldIssues.append((key, "must be a string"))
                    _ = try scanner.skipValue()
                    continue
                }
                operationName = try scanner.readString()
            case 2:  // input
                input = RawJSON(trusted: scanner.bytes[try scanner.skipValue()])
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
                        draft.dependencyIds.append(try scanner.readString())
                    } else {
                        fieldIssues.append((key, "must contain only task ids (strings)"))
                        _ = try scanner.skipValue()
                    }
                }
            default:  // "timeout_ms"
                draft.timeoutMilliseconds = try readPositiveInteger(&scanner)
                if draft.timeoutMilliseconds == nil { fieldIssues.append((key, Self.positiveIntegerMessage)) }
            }
        }

        if seenKeys & 1 == 0 { fieldIssues.append(("id", "is required")) }
        if let operationName {
            if let operation = lastOperation?.name == operationName ? lastOperation : registry[operationName] {
                lastOperation = operation
                draft.isInstant = operation.isInstant
                draft.operation = operation.name
                prepare(input, of: operation, context: context, into: &draft, fieldIssues: &fieldIssues)
            } else {
                fieldIssues.append(("op", "unknown operation '\(operationName)'; GET /ops lists them"))
            }
        } else if seenKeys & 2 == 0 {
            fieldIssues.append(("op", "is required"))
        }
        let reference = draft.reference
        for (field, message) in fieldIssues {
            issues.append(ValidationIssue(task: reference, field: field, message: message))
        }
        return draft
    }

    /// Decodes a task's input, or, when it references other tasks, checks what can be checked
    /// before they have run and keeps it for later.
    private func prepare(
        _ input: RawJSON?, of operation: AnyOperation, context: RequestContext, into draft: inout DraftTask,
        fieldIssues: inout [(field: String, message: String)]
    ) {
        func prepareNow(_ input: RawJSON) {
            do {
                draft.work = try operation.prepare(input, context: context)
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
            draft.referencedIds.append((reference.taskID, field))
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
        draft.deferredInput = (template, operation)
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

    /// Resolves dependency ids to indices and reports duplicate ids, unknown or self
    /// dependencies, and cycles.
    private func resolveDependencies(
        _ drafts: [DraftTask], indexById: inout [String: Int], issues: inout [ValidationIssue]
    ) -> [[Int]] {
        indexById.reserveCapacity(drafts.count)
        for index in drafts.indices {
            guard let id = drafts[index].id else { continue }
            if let previous = indexById.updateValue(index, forKey: id) {
                indexById[id] = previous  // the first task keeps the id
                issues.append(
                    ValidationIssue(
                        task: .index(index), field: "id",
                        message: "duplicate id '\(id)' (also used by task \(previous))"))
            }
        }

        var dependencies = [[Int]](repeating: [], count: drafts.count)
        var graphIsComplete = true
        for index in drafts.indices where !drafts[index].dependencyIds.isEmpty || !drafts[index].referencedIds.isEmpty {
            let draft = drafts[index]
            var seen = Set<Int>()
            // A reference implies a dependency on the task it reads.
            for (referencedId, field) in draft.referencedIds {
                guard let target = indexById[referencedId] else {
                    issues.append(
                        ValidationIssue(
                            task: draft.reference, field: field, message: "references unknown task id '\(referencedId)'"))
                    graphIsComplete = false
                    continue
                }
                if target == draft.index || referencedId == draft.id {
                    issues.append(
                        ValidationIssue(
                            task: draft.reference, field: field, message: "a task cannot reference its own output"))
                    graphIsComplete = false
                    continue
                }
                if seen.insert(target).inserted { dependencies[draft.index].append(target) }
            }
            for dependencyId in draft.dependencyIds {
                guard let target = indexById[dependencyId] else {
                    issues.append(
                        ValidationIssue(
                            task: draft.reference, field: "depends_on",
                            message: "unknown task id '\(dependencyId)'"))
                    graphIsComplete = false
                    continue
                }
                if target == draft.index || dependencyId == draft.id {
                    issues.append(
                        ValidationIssue(
                            task: draft.reference, field: "depends_on", message: "a task cannot depend on itself"))
                    graphIsComplete = false
                    continue
                }
                if seen.insert(target).inserted { dependencies[draft.index].append(target) }
            }
        }
        if graphIsComplete, dependencies.contains(where: { !$0.isEmpty }) {
            reportCycles(drafts, dependencies: dependencies, issues: &issues)
        }
        return dependencies
    }

    /// Finds the tasks Kahn's algorithm cannot order and reports each cycle among them once.
    private func reportCycles(_ drafts: [DraftTask], dependencies: [[Int]], issues: inout [ValidationIssue]) {
        var remaining = dependencies.map { $0.count }
        var dependents = [[Int]](repeating: [], count: drafts.count)
        for (index, list) in dependencies.enumerated() {
            for dependency in list { dependents[dependency].append(index) }
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
        guard queue.count < drafts.count else { return }

        // Every task left has a dependency that is also left: following them must loop.
        var visited = [Bool](repeating: false, count: drafts.count)
        for start in remaining.indices where remaining[start] > 0 && !visited[start] {
            var path: [Int] = []
            var positionInPath: [Int: Int] = [:]
            var current = start
            while !visited[current] {
                visited[current] = true
                positionInPath[current] = path.count
                path.append(current)
                current = dependencies[current].first { remaining[$0] > 0 }!
            }
            guard let cycleStart = positionInPath[current] else { continue }  // ran into a cycle already reported
            let cycle = path[cycleStart...] + [current]
            let description = cycle.map { "'\(drafts[$0].id ?? "#\($0)")'" }.joined(separator: " → ")
            issues.append(
                ValidationIssue(
                    task: drafts[current].reference, field: "depends_on",
                    message: "dependency cycle: \(description) (each depends on, or references, the next)"))
        }
    }
}
