import FanoutService
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing

@testable import FanoutCommandLine

@Suite struct LogFormatTests {
    /// The lines a handler writes while `body` runs.
    private func captured(
        _ format: StderrLogHandler.Format, label: String = "fanout", _ body: (StderrLogHandler) -> Void
    ) -> [String] {
        let captured = NIOLockedValueBox<[String]>([])
        let handler = StderrLogHandler(label: label, level: .info, format: format) { line in
            captured.withLockedValue { $0.append(String(decoding: line, as: UTF8.self)) }
        }
        body(handler)
        return captured.withLockedValue { $0 }
    }

    /// A logfmt line's members by key, unescaped.
    private func members(logfmt line: String) -> [String: String] {
        var members: [String: String] = [:]
        var rest = Substring(line.dropLast())  // the newline
        while !rest.isEmpty {
            let key = rest.prefix { $0 != "=" }
            rest = rest.dropFirst(key.count + 1)
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let character = rest.first, character != "\"" {
                    rest = rest.dropFirst()
                    if character == "\\", let escaped = rest.first {
                        rest = rest.dropFirst()
                        value.append(escaped == "n" ? "\n" : escaped)
                    } else {
                        value.append(character)
                    }
                }
                rest = rest.dropFirst()
            } else {
                value = String(rest.prefix { $0 != " " })
                rest = rest.dropFirst(value.count)
            }
            members[String(key)] = value
            rest = rest.drop { $0 == " " }
        }
        return members
    }

    private func members(_ format: StderrLogHandler.Format, _ line: String) throws -> [String: String] {
        switch format {
        case .logfmt: return members(logfmt: line)
        case .json:
            return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        }
    }

    @Test("a request's line written from its record is the line logged with its metadata", arguments: [
        StderrLogHandler.Format.logfmt, .json,
    ])
    func requestLineFromRecord(format: StderrLogHandler.Format) throws {
        for record in [
            RequestLogRecord(
                method: "POST", path: "/batch", status: 200, tasks: 12, duration: .microseconds(1_234_567),
                requestID: "r-1", streamed: false),
            RequestLogRecord(
                method: "GET", path: "/a b\"c", status: 404, tasks: 0, duration: .nanoseconds(999),
                requestID: "", streamed: true),
        ] {
            for label in ["fanout", "other"] {
                let direct = captured(format, label: label) { $0.logRequest(record) }
                let logged = captured(format, label: label) { handler in
                    Logger(label: label) { _ in handler }.info("request", metadata: record.metadata)
                }
                #expect(direct.count == 1 && logged.count == 1)
                var expected = try members(format, logged.first ?? "")
                var actual = try members(format, direct.first ?? "")
                #expect(actual["duration_ms"] == record.metadata["duration_ms"]?.description)
                #expect(actual["time"]?.count == 24)
                expected["time"] = nil
                actual["time"] = nil
                #expect(actual == expected)
                #expect(actual["status"] == String(record.status))
            }
        }
        // Like any info line, not written when the level is above info.
        let quiet = StderrLogHandler(label: "fanout", level: .notice, format: format) { _ in
            Issue.record("a request line was written at level notice")
        }
        quiet.logRequest(
            RequestLogRecord(
                method: "GET", path: "/", status: 200, tasks: 0, duration: .zero, requestID: "x", streamed: false))
    }

    private func line(_ format: StderrLogHandler.Format, _ metadata: Logger.Metadata) -> String {
        let captured = NIOLockedValueBox<[String]>([])
        var logger = Logger(label: "fanout") { label in
            StderrLogHandler(label: label, level: .info, format: format) { line in
                captured.withLockedValue { $0.append(String(decoding: line, as: UTF8.self)) }
            }
        }
        logger.logLevel = .info
        logger.info("request", metadata: metadata)
        logger.debug("not written")
        let lines = captured.withLockedValue { $0 }
        #expect(lines.count == 1)
        return lines.first ?? ""
    }

    @Test func logfmtQuotesOnlyWhatNeedsIt() {
        let text = line(
            .logfmt,
            ["path": "/batch", "agent": "curl 8", "empty": "", "quote": "a\"b", "newline": "a\nb", "equals": "a=b"])
        #expect(text.hasPrefix("time="))
        #expect(text.hasSuffix("\n"))
        #expect(text.contains(" level=info msg=request "))
        #expect(text.contains(" path=/batch"))
        #expect(text.contains(#" agent="curl 8""#))
        #expect(text.contains(#" empty="""#))
        #expect(text.contains(#" quote="a\"b""#))
        #expect(text.contains(#" newline="a\nb""#))
        #expect(text.contains(#" equals="a=b""#))
        #expect(text.filter { $0 == "\n" }.count == 1)
    }

    @Test func jsonIsOneObjectPerLine() throws {
        let text = line(.json, ["status": "200", "odd": "tab\there \"quoted\" \u{1}"])
        #expect(text.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String])
        #expect(object["msg"] == "request")
        #expect(object["level"] == "info")
        #expect(object["status"] == "200")
        #expect(object["odd"] == "tab\there \"quoted\" \u{1}")
        #expect(object["time"]?.hasSuffix("Z") == true)
    }
}
