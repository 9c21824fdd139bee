import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// The client's exit codes, documented in the README.
enum ClientExit {
    /// Every task succeeded (or, for `status` of an unfinished job, it is queued or running).
    static let succeeded: Int32 = 0
    /// Some or all tasks failed, were skipped or were cancelled with the batch still running.
    static let someFailed: Int32 = 1
    /// The job was cancelled.
    static let cancelled: Int32 = 2
    /// The server refused the request (4xx: invalid batch, unknown job, …).
    static let rejected: Int32 = 65
    /// The server failed or could not be reached, or the wait timed out.
    static let serverError: Int32 = 69
}

/// Options every client subcommand takes.
struct ClientOptions: ParsableArguments {
    @Option(help: "Fanout's address. [FANOUT_URL, default http://127.0.0.1:8080, the make run address]")
    var url: String?

    @Flag(help: "Print the server's JSON as it came, for scripts.")
    var json = false

    @Option(help: "Give up after this many seconds (exit 69).")
    var timeout: Int = 300

    var baseURL: String {
        let base = url ?? ProcessInfo.processInfo.environment["FANOUT_URL"] ?? "http://127.0.0.1:8080"
        return base.hasSuffix("/") ? String(base.dropLast()) : base
    }
}

/// A response read whole.
struct ClientResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
    var text: String { String(decoding: body, as: UTF8.self) }

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
}

/// Requests to Fanout, and what every client subcommand prints on failure.
struct FanoutClient {
    let options: ClientOptions

    func send(
        _ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = []
    ) async throws -> ClientResponse {
        var request = HTTPClientRequest(url: options.baseURL + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(Int64(options.timeout)))
            let collected = try await response.body.collect(upTo: 1 << 30)
            return ClientResponse(
                status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                body: Array(collected.readableBytesView))
        } catch {
            throw Self.unreachable(error, url: options.baseURL)
        }
    }

    static func unreachable(_ error: any Error, url: String) -> ExitCode {
        printError("fanout: cannot reach \(url): \(error)")
        return ExitCode(ClientExit.serverError)
    }

    /// Prints a problem document's title and detail, and returns the exit code for its status.
    func fail(_ response: ClientResponse) -> ExitCode {
        if options.json {
            print(response.text)
        } else if let problem = response.json {
            let title = problem["title"] as? String ?? "HTTP \(response.status)"
            let detail = problem["detail"] as? String
            printError("fanout: \(response.status) \(title)\(detail.map { ": " + $0 } ?? "")")
            for error in problem["errors"] as? [[String: Any]] ?? [] {
                let place = [error["task"] as? String, error["field"] as? String].compactMap { $0 }.joined(separator: " ")
                printError("  \(place.isEmpty ? "" : place + ": ")\(error["message"] as? String ?? "")")
            }
        } else {
            printError("fanout: HTTP \(response.status): \(response.text.prefix(500))")
        }
        return ExitCode(response.status < 500 ? ClientExit.rejected : ClientExit.serverError)
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// The exit code for a batch or job status.
func clientExitCode(status: String) -> Int32 {
    switch status {
    case "succeeded", "queued", "running": ClientExit.succeeded
    case "cancelled": ClientExit.cancelled
    default: ClientExit.someFailed
    }
}

/// One line per task result, for people: `✓ id  12.3 ms` or `✗ id  failed  code: message`.
func describe(result: [String: Any]) -> String {
    let id = result["id"] as? String ?? "?"
    let status = result["status"] as? String ?? "?"
    let mark = status == "succeeded" ? "✓" : "✗"
    var line = "\(mark) \(id)  \(status)"
    if let error = result["error"] as? [String: Any] {
        line += "  \(error["code"] as? String ?? ""): \(error["message"] as? String ?? "")"
    }
    if let duration = result["duration_ms"] as? Double { line += "  \(duration) ms" }
    return line
}

/// A job document: as it came (`--json`), or a line per task result and the progress line.
func printJob(_ response: ClientResponse, _ document: [String: Any], json: Bool) {
    if json {
        print(response.text)
    } else {
        for item in document["results"] as? [[String: Any]] ?? [] { print(describe(result: item)) }
        print(JobProgress(document).line)
    }
}

func summaryLine(_ summary: [String: Any], status: String) -> String {
    let counts = ["succeeded", "failed", "skipped", "cancelled"].map { "\(summary[$0] as? Int ?? 0) \($0)" }
    return "\(status): " + counts.joined(separator: ", ")
}

/// `fanout submit FILE`: runs a batch and prints its results.
struct SubmitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a batch from a JSON file (- for standard input) and print its results.",
        discussion: """
            Exit codes: 0 every task succeeded (with --async: the job was accepted), 1 some failed, \
            2 cancelled, 64 usage, 65 the server refused the batch (4xx), 69 server error, \
            unreachable or timed out.
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "The batch, as the body of POST /batch.") var file: String
    @Flag(help: "Stream the results, each as it finishes (application/x-ndjson).") var stream = false
    @Flag(name: .customLong("async"), help: "Queue the batch as a job and print its id (then: fanout watch ID).")
    var asynchronous = false
    @Option(help: "An Idempotency-Key, so that a repeated submission makes one job.") var idempotencyKey: String?

    func validate() throws {
        if stream && asynchronous { throw ValidationError("--stream and --async cannot be used together") }
    }

    func run() async throws {
        let body: [UInt8]
        if file == "-" {
            body = Array(FileHandle.standardInput.readDataToEndOfFile())
        } else {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read \(file)")
            }
            body = Array(data)
        }
        let client = FanoutClient(options: options)
        var headers: [(String, String)] = []
        if let idempotencyKey { headers.append(("Idempotency-Key", idempotencyKey)) }
        if asynchronous {
            headers.append(("Prefer", "respond-async"))
            let response = try await client.send(.POST, "/batch", body: body, headers: headers)
            guard response.status == 202 || response.status == 200 else { throw client.fail(response) }
            let job = response.json ?? [:]
            if options.json {
                print(response.text)
            } else {
                let id = job["id"] as? String ?? "?"
                print(id)
                printError("job \(id) \(job["status"] as? String ?? "queued"); follow it with: fanout watch \(id)")
            }
            return
        }
        if stream {
            try await runStreamed(body, headers: headers, client: client)
            return
        }
        let response = try await client.send(.POST, "/batch", body: body, headers: headers)
        guard response.status == 200, let result = response.json else { throw client.fail(response) }
        let status = result["status"] as? String ?? "failed"
        if options.json {
            print(response.text)
        } else {
            for item in result["results"] as? [[String: Any]] ?? [] { print(describe(result: item)) }
            print(summaryLine(result["summary"] as? [String: Any] ?? [:], status: status))
        }
        throw ExitCode(clientExitCode(status: status))
    }

    private func runStreamed(_ body: [UInt8], headers: [(String, String)], client: FanoutClient) async throws {
        var request = HTTPClientRequest(url: options.baseURL + "/batch")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/x-ndjson")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        var status = "failed"
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(Int64(options.timeout)))
            guard response.status == .ok else {
                let collected = try await response.body.collect(upTo: 1 << 24)
                throw client.fail(
                    ClientResponse(
                        status: Int(response.status.code), headers: [], body: Array(collected.readableBytesView)))
            }
            var pending: [UInt8] = []
            for try await piece in response.body {
                pending += piece.readableBytesView
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(pending[..<newline])
                    pending.removeSubrange(...newline)
                    guard !line.isEmpty else { continue }
                    if options.json { print(String(decoding: line, as: UTF8.self)) }
                    guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                        continue
                    }
                    if let summary = object["summary"] as? [String: Any] {
                        status = object["status"] as? String ?? status
                        if !options.json { print(summaryLine(summary, status: status)) }
                    } else if !options.json {
                        print(describe(result: object))
                    }
                }
            }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw FanoutClient.unreachable(error, url: options.baseURL)
        }
        throw ExitCode(clientExitCode(status: status))
    }
}

/// `fanout status JOB`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Print an asynchronous job's status and progress (and its results once finished).",
        discussion: "Exit codes: 0 succeeded, queued or running, 1 failed or partial, 2 cancelled, 65 unknown job, 69 server error.")

    @OptionGroup var options: ClientOptions
    @Argument(help: "The job's id.") var job: String

    func run() async throws {
        let client = FanoutClient(options: options)
        let response = try await client.send(.GET, "/batch/" + job)
        guard response.status == 200, let document = response.json else { throw client.fail(response) }
        printJob(response, document, json: options.json)
        throw ExitCode(clientExitCode(status: JobProgress(document).status))
    }
}

/// `fanout cancel JOB`.
struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel an asynchronous job.",
        discussion: "Exit codes: 0 cancelled or cancellation requested, 65 unknown or already finished job, 69 server error.")

    @OptionGroup var options: ClientOptions
    @Argument(help: "The job's id.") var job: String

    func run() async throws {
        let client = FanoutClient(options: options)
        let response = try await client.send(.DELETE, "/batch/" + job)
        guard response.status == 200 || response.status == 202, let document = response.json else {
            throw client.fail(response)
        }
        if options.json {
            print(response.text)
        } else {
            print(response.status == 200 ? "job \(job) cancelled" : "job \(job): cancellation requested")
            print(JobProgress(document).line)
        }
    }
}

/// `fanout ops`.
struct OpsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ops", abstract: "List the operations the server offers.")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let client = FanoutClient(options: options)
        let response = try await client.send(.GET, "/ops")
        guard response.status == 200, let listing = response.json else { throw client.fail(response) }
        if options.json {
            print(response.text)
            return
        }
        for operation in listing["operations"] as? [[String: Any]] ?? [] {
            let name = operation["name"] as? String ?? "?"
            print(name.padding(toLength: max(8, name.count + 2), withPad: " ", startingAt: 0)
                + (operation["description"] as? String ?? ""))
        }
    }
}

/// What a job document says of its progress.
struct JobProgress {
    var id: String
    var status: String
    var total: Int
    var succeeded: Int
    var failed: Int
    var skipped: Int
    var cancelled: Int

    init(_ document: [String: Any]) {
        id = document["id"] as? String ?? "?"
        status = document["status"] as? String ?? "?"
        let progress = document["progress"] as? [String: Any] ?? [:]
        total = progress["total"] as? Int ?? 0
        succeeded = progress["succeeded"] as? Int ?? 0
        failed = progress["failed"] as? Int ?? 0
        skipped = progress["skipped"] as? Int ?? 0
        cancelled = progress["cancelled"] as? Int ?? 0
    }

    var finished: Int { succeeded + failed + skipped + cancelled }
    var isFinished: Bool { !["queued", "running"].contains(status) }

    /// `job 01J… running: 40/100 tasks finished, 2 failed`.
    var line: String {
        var text = "job \(id) \(status): \(finished)/\(total) tasks finished"
        let unsuccessful = failed + skipped + cancelled
        if unsuccessful > 0 { text += ", \(unsuccessful) not succeeded (\(failed) failed)" }
        return text
    }
}
