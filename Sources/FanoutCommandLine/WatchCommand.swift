import ArgumentParser
import ConsoleKitTerminal
import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// `fanout watch JOB`: follows a job until it ends.
///
/// On a terminal, a live progress bar (console-kit's) of finished/total tasks with failures
/// counted, drawn on stderr so that stdout keeps only the results; otherwise a plain line every
/// few seconds and at each change of status.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Follow an asynchronous job with a progress bar until it ends, then print its results.",
        discussion: """
            The bar is drawn on stderr when it is a terminal (colours unless NO_COLOR is set); \
            otherwise progress is a plain line every --every seconds. Exit codes: 0 succeeded, \
            1 failed or partial, 2 cancelled, 65 unknown job, 69 server error or --timeout reached.
            """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "The job's id.") var job: String
    @Option(help: "Seconds between polls.") var interval: Double = 0.5
    @Option(help: "Seconds between progress lines when stderr is not a terminal.") var every: Double = 5

    func validate() throws {
        guard interval >= 0.05, interval <= 60 else { throw ValidationError("--interval must be from 0.05 to 60") }
    }

    func run() async throws {
        let client = FanoutClient(options: options)
        let interactive = isatty(2) == 1
        var bar: ActivityIndicator<ProgressBar>?
        let started = ContinuousClock.now
        var lastLine = ContinuousClock.now - .seconds(3600)
        var lastStatus = ""
        var document: [String: Any] = [:]
        var response: ClientResponse
        while true {
            response = try await client.send(.GET, "/batch/" + job)
            guard response.status == 200, let current = response.json else {
                bar?.fail()
                throw client.fail(response)
            }
            document = current
            let progress = JobProgress(document)
            if interactive {
                if bar == nil {
                    let console = StderrConsole()
                    bar = console.progressBar(title: progress.barTitle(colour: console.colours))
                    bar?.start(refreshRate: 100)
                }
                bar?.activity.title = progress.barTitle(colour: false)
                bar?.activity.currentProgress = progress.total == 0 ? 0 : Double(progress.finished) / Double(progress.total)
            } else if progress.status != lastStatus || ContinuousClock.now - lastLine >= .seconds(every) {
                printError(progress.line)
                lastLine = .now
            }
            lastStatus = progress.status
            if progress.isFinished {
                if progress.status == "succeeded" { bar?.succeed() } else { bar?.fail() }
                break
            }
            if ContinuousClock.now - started > .seconds(options.timeout) {
                bar?.fail()
                printError("fanout: gave up watching after \(options.timeout) s; the job goes on (\(progress.line))")
                throw ExitCode(ClientExit.serverError)
            }
            try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
        printJob(response, document, json: options.json)
        throw ExitCode(clientExitCode(status: JobProgress(document).status))
    }
}

extension JobProgress {
    /// The progress bar's title: `40/100 · 2 failed`.
    func barTitle(colour: Bool) -> String {
        var title = "\(status) \(finished)/\(total)"
        let unsuccessful = failed + skipped + cancelled
        if unsuccessful > 0 { title += " · \(unsuccessful) not succeeded" }
        return title
    }
}

/// A console-kit `Console` on stderr, for the progress bar: stdout stays the results'.
final class StderrConsole: Console, Sendable {
    private let info = NIOLockedValueBox<[AnySendableHashable: any Sendable]>([:])
    /// Colours unless `NO_COLOR` is set (https://no-color.org).
    let colours = ProcessInfo.processInfo.environment["NO_COLOR"].map { $0.isEmpty } ?? true

    var userInfo: [AnySendableHashable: any Sendable] {
        get { info.withLockedValue { $0 } }
        set { info.withLockedValue { $0 = newValue } }
    }

    var size: (width: Int, height: Int) {
        var window = winsize()
        guard ioctl(2, UInt(TIOCGWINSZ), &window) == 0, window.ws_col > 0 else { return (80, 24) }
        return (Int(window.ws_col), Int(window.ws_row))
    }

    var supportsANSICommands: Bool { true }

    func input(isSecure: Bool) -> String { readLine() ?? "" }

    func output(_ text: ConsoleText, newLine: Bool) {
        var lines = newLine ? 1 : 0
        var output = ""
        for fragment in text.fragments {
            lines += fragment.string.count(where: { $0 == "\n" })
            if colours, let code = Self.code(fragment.style.color) {
                output += "\u{1B}[\(code)m\(fragment.string)\u{1B}[0m"
            } else {
                output += fragment.string
            }
        }
        didOutputLines(count: lines)
        write(output + (newLine ? "\n" : ""))
    }

    func clear(_ type: ConsoleClear) {
        switch type {
        case .line: write("\u{1B}[1A\u{1B}[2K")
        case .screen: write("\u{1B}[2J")
        }
    }

    func report(error: String, newLine: Bool) {
        write(error + (newLine ? "\n" : ""))
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    private static func code(_ color: ConsoleColor?) -> Int? {
        switch color {
        case .red: 31
        case .green: 32
        case .yellow: 33
        case .blue: 34
        case .magenta: 35
        case .cyan: 36
        default: nil
        }
    }
}
