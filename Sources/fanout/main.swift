import FanoutCommandLine

// Before any thread exists: what the responder needs of the process (see `FanoutCommand.prepare`).
FanoutCommand.prepare(arguments: CommandLine.arguments)
await FanoutCommand.run(arguments: Array(CommandLine.arguments.dropFirst()))
