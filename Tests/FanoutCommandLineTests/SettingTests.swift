import ArgumentParser
import Foundation
import Testing

@testable import FanoutCommandLine

@Suite struct SettingTests {
    /// The README's configuration table is the declarations' table, row for row.
    @Test func readmeTableMatchesTheDeclarations() throws {
        let readme = try String(contentsOfFile: Self.repositoryRoot + "/README.md", encoding: .utf8)
        let lines = readme.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0.hasPrefix("| flag | variable | default | meaning |") }) else {
            Issue.record("README.md has no configuration table")
            return
        }
        let table = lines[start...].prefix { $0.hasPrefix("|") }.joined(separator: "\n") + "\n"
        #expect(table == Setting.markdownTable, "run `fanout settings` and paste its table into README.md")
    }

    /// Every declaration is an option of `fanout serve`, and every option is declared.
    @Test func everyDeclarationIsAnOption() {
        let help = ServeCommand.helpMessage(columns: 400)
        for setting in Setting.all {
            #expect(help.contains("--\(setting.flag)"), "--\(setting.flag) is declared but not an option")
            #expect(help.contains(setting.variable), "the help of --\(setting.flag) does not name \(setting.variable)")
        }
        let options = help.split(separator: "\n").filter { $0.hasPrefix("  --") }.count
        #expect(options == Setting.all.count)  // --help is written "-h, --help"
    }

    @Test func valuesComeFromTheCommandLineThenTheEnvironmentThenTheDefault() throws {
        #expect(try Setting.maxTasks.resolve("5", environment: ["FANOUT_MAX_TASKS": "7"]) == "5")
        #expect(try Setting.maxTasks.resolve(nil, environment: ["FANOUT_MAX_TASKS": "7"]) == "7")
        #expect(try Setting.maxTasks.resolve(nil, environment: ["FANOUT_MAX_TASKS": ""]) == "100000")
        #expect(try Setting.socket.resolve(nil, environment: [:]) == nil)
        #expect(Setting.allowRemote.isOn(false, environment: ["FANOUT_ALLOW_REMOTE": "1"]))
        #expect(!Setting.allowRemote.isOn(false, environment: ["FANOUT_ALLOW_REMOTE": "yes"]))
    }

    @Test(arguments: [
        (Setting.maxTasks, "0"), (Setting.maxTasks, "ten"), (Setting.ioThreads, "257"), (Setting.logLevel, "loud"),
        (Setting.logFormat, "xml"), (Setting.maxRunningJobs, "-1"),
    ])
    func invalidValuesNameTheFlagAndTheVariable(setting: Setting, value: String) {
        #expect {
            _ = try setting.resolve(value, environment: [:])
        } throws: { error in
            let text = "\(error)"
            return text.contains("--\(setting.flag)") && text.contains(setting.variable) && text.contains(value)
        }
    }

    @Test func theServeCommandBuildsItsConfigurationFromTheSettings() throws {
        let command = try ServeCommand.parse(["--max-tasks", "12", "--max-running-jobs", "0"])
        let configuration = try command.makeConfiguration(["FANOUT_MAX_DEPTH": "9", "FANOUT_DATA_DIR": "none"])
        #expect(configuration.service.limits.maximumTasks == 12)
        #expect(configuration.service.limits.maximumDepth == 9)
        #expect(configuration.jobs.maximumRunning == 0)
        #expect(configuration.dataDirectory == nil)
        #expect(configuration.service.limits.maximumConcurrency == 256)
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
}
