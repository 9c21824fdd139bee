import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing

@testable import FanoutCommandLine

@Suite struct LogFormatTests {
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
