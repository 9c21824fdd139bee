import FanoutEngine
import FanoutHTTP
import FuzzSupport

// A request body, as POST /batch receives it, decoded and validated with every operation the
// responder serves (`http` with two upstreams, one of them restricted). Either it is refused with
// at least one problem listed, or the batch it yields keeps the contract's promises.
let client: UpstreamClient = {
    var api = Upstream(name: "api", baseURL: try! BaseURL(parsing: "http://127.0.0.1:9/v1"))
    api.forwardHeaders = ["authorization"]
    var readOnly = Upstream(name: "readonly", baseURL: try! BaseURL(parsing: "http://127.0.0.1:9"))
    readOnly.methods = ["GET"]
    readOnly.pathPrefixes = ["/public"]
    readOnly.headers = [("x-api-key", "operator-key")]
    return UpstreamClient(upstreams: [api, readOnly])
}()

/// `splitBytes`: 1 decodes every tasks array of two or more tasks in two halves at once.
func makeDecoder(splitBytes: Int) -> BatchDecoder {
    var registry = OperationRegistry()
    registry.register(EchoOperation())
    registry.register(SleepOperation(maximumMilliseconds: 60_000))
    registry.register(HashOperation())
    registry.register(FailOperation())
    registry.register(HTTPOperation(client: client))
    var limits = EngineLimits()
    limits.maximumTasks = 1_000
    return BatchDecoder(registry: registry, limits: limits, splitBytes: splitBytes)
}

let decoder = makeDecoder(splitBytes: .max)
let splitDecoder = makeDecoder(splitBytes: 1)

let context = RequestContext(requestID: "fuzz", headers: ["authorization": "Bearer fuzz"])

fuzzMain { start, count in
    let body = FuzzInput(start, count).bytes
    // Decoded in two halves, the same batch or the same problems as in one piece.
    let whole = Result { () throws(BatchValidationError) in try decoder.decode(body, context: context) }
    let split = Result { () throws(BatchValidationError) in try splitDecoder.decode(body, context: context) }
    switch (whole, split) {
    case (.success(let one), .success(let two)):
        require(Array(one.ids) == Array(two.ids), "split decoding changed the ids")
        require(one.tasks.indices.map(one.operation(of:)) == two.tasks.indices.map(two.operation(of:)), "split decoding changed the operations")
        require(one.tasks.map(\.dependencies) == two.tasks.map(\.dependencies), "split decoding changed the graph")
    case (.failure(let one), .failure(let two)):
        require(one == two, "split decoding reported other problems: \(one.issues) against \(two.issues)")
    default:
        require(false, "only one of the two decodings accepted the batch")
    }
    do throws(BatchValidationError) {
        let batch = try decoder.decode(body, context: context)
        require(!batch.tasks.isEmpty && batch.tasks.count <= 1_000, "\(batch.tasks.count) tasks accepted")
        require(Set(batch.ids.map { Array($0.utf8) }).count == batch.tasks.count, "two tasks share an id")
        require(batch.concurrency >= 1 && batch.concurrency <= 256, "concurrency \(batch.concurrency)")
        require(batch.timeout > .zero && batch.timeout <= .seconds(60), "batch timeout \(batch.timeout)")
        for (index, task) in batch.tasks.enumerated() {
            require(task.timeout > .zero && task.timeout <= .seconds(60), "task timeout \(task.timeout)")
            require(task.dependencies.allSatisfy { $0 != index && batch.tasks.indices.contains($0) }, "dependency")
        }
        require(isAcyclic(batch), "a cycle was accepted")
    } catch {
        require(!error.issues.isEmpty, "refused without a problem listed")
        require(!error.isMalformed || error.issues.count == 1, "a malformed body listed several problems")
    }
    return 0
}

/// Whether the tasks can be ordered so that each comes after everything it depends on.
private func isAcyclic(_ batch: Batch) -> Bool {
    var remaining = batch.tasks.map(\.dependencies.count)
    var dependents = [[Int]](repeating: [], count: batch.tasks.count)
    for (index, task) in batch.tasks.enumerated() { for dependency in task.dependencies { dependents[dependency].append(index) } }
    var ready = remaining.indices.filter { remaining[$0] == 0 }
    var ordered = 0
    while let next = ready.popLast() {
        ordered += 1
        for dependent in dependents[next] {
            remaining[dependent] -= 1
            if remaining[dependent] == 0 { ready.append(dependent) }
        }
    }
    return ordered == batch.tasks.count
}
