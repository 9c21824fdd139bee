import ArgumentParser
import CLinux
import FastCGI

#if canImport(Glibc)
    import Glibc
#endif

/// `fanout`: the responder (`fanout serve`, also what runs with no subcommand, as spawn-fcgi and
/// systemd start it) and a client for people at a terminal.
public struct FanoutCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "Fanout: a batch endpoint served over FastCGI (behind nginx), and its terminal client.",
        subcommands: [
            ServeCommand.self, SubmitCommand.self, WatchCommand.self, StatusCommand.self, CancelCommand.self,
            OpsCommand.self, SettingsCommand.self,
        ],
        defaultSubcommand: ServeCommand.self)

    public init() {}

    /// Parses `arguments` and runs the subcommand they name, exiting with its status.
    public static func run(arguments: [String]) async {
        do {
            var command = try parseAsRoot(arguments)
            if var asynchronous = command as? any AsyncParsableCommand {
                try await runAsynchronously(&asynchronous)
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    private static func runAsynchronously(_ command: inout some AsyncParsableCommand) async throws {
        try await command.run()
    }

    /// The subcommands that are clients: everything else serves.
    static let clientCommands: Set<String> = ["submit", "watch", "status", "cancel", "ops", "settings", "help"]

    /// Prepares the process for serving, from `main`, before any thread starts; does nothing for
    /// the client subcommands.
    ///
    /// Calls `FCGX_Init`, and blocks SIGTERM and SIGINT in this thread, which every thread created
    /// later inherits: the signals then interrupt no read or write and stay pending for the
    /// service group's signal source (libdispatch reads them through a signalfd, which only
    /// sees signals that no thread takes).
    public static func prepare(arguments: [String]) {
        if arguments.count > 1, clientCommands.contains(arguments[1]) || arguments[1] == "--help" || arguments[1] == "-h" {
            return
        }
        FastCGIServer.initializeLibrary()
        HeapTrimmer.configure()
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGTERM, SIGINT, SIGUSR1] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
    }
}
