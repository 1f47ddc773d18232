// The pure parts of `capsule audit show|tail|stats`: times, filters and the table's cells.
import Testing
import CapsuleProtocol
@testable import CapsuleAudit

@Suite("audit queries") struct AuditQueryTests {
    @Test func rfc3339TimesAndDates() {
        #expect(AuditTime.microseconds("1970-01-01T00:00:00Z") == 0)
        #expect(AuditTime.microseconds("2026-12-01T13:05:00.123456Z") == 1_796_130_300_123_456)
        #expect(AuditTime.microseconds("2026-12-01 14:05:00.5+01:00") == 1_796_130_300_500_000)
        #expect(AuditTime.microseconds("2026-12-01T08:05:00-05:00") == 1_796_130_300_000_000)
        #expect(AuditTime.microseconds("2026-12-01") == 1_796_083_200_000_000)
        #expect(AuditTime.microseconds("2024-02-29T00:00:00z") == 1_709_164_800_000_000) // a leap day
        for bad in ["2026-12-01T13:05:00", "2026-13-01", "2026-12-01T25:00:00Z", "yesterday", "2026-12-01T13:05:00.Z", ""] {
            #expect(AuditTime.microseconds(bad) == nil, "\(bad)")
        }
    }

    @Test func sinceTakesASpanBackFromNow() {
        let now: Int64 = 10_000_000_000
        #expect(AuditTime.since("90s", now: now) == now - 90_000_000)
        #expect(AuditTime.since("10m", now: now) == now - 600_000_000)
        #expect(AuditTime.since("1.5h", now: now) == now - 5_400_000_000)
        #expect(AuditTime.since("1d", now: now) == now - 86_400_000_000)
        #expect(AuditTime.since("1970-01-01T00:00:01Z", now: now) == 1_000_000)
        for bad in ["10", "m", "-5m", "10y", "tenm"] { #expect(AuditTime.since(bad, now: now) == nil, "\(bad)") }
    }

    @Test func filtersCombine() throws {
        let denied = try JSONValue.parse(Array(#"{"seq":3,"ts":"2026-12-01T13:05:00.000001Z","session":"abcdef0123456789","kind":"cap.denied","capability":"file","method":"read_bytes","decision":"denied"}"#.utf8))
        var filter = AuditFilter()
        #expect(filter.matches(denied))
        filter.sessions = ["abcdef01"]
        filter.kinds = ["cap"]
        filter.capabilities = ["file.read_bytes"]
        filter.deniedOnly = true
        filter.since = AuditTime.microseconds("2026-12-01T13:05:00Z")
        #expect(filter.matches(denied))
        let narrowings: [(inout AuditFilter) -> Void] = [
            { $0.sessions = ["abd"] }, { $0.kinds = ["cap.call"] }, { $0.capabilities = ["file.write_bytes", "env"] },
            { $0.since = AuditTime.microseconds("2026-12-01T13:05:01Z") },
        ]
        for change in narrowings {
            var narrower = filter
            change(&narrower)
            #expect(!narrower.matches(denied))
        }
        #expect(AuditFilter.kindProblem(["cap.denied", "exec", "audit.start"]) == nil)
        #expect(AuditFilter.kindProblem(["cap.deny"])?.hasPrefix("`cap.deny` is not an event kind; the kinds are audit.start, ") == true)
    }

    @Test func tableCellsAreEscapedClippedAndFit() throws {
        let hostile = try JSONValue.parse(Array(#"{"seq":1,"ts":"2026-12-01T13:05:00.000001Z","session":"abcdef0123456789","kind":"cap.denied","capability":"file","method":"read_bytes","args":{"path":"/tmp/\u001b[31mred\u0007"},"decision":"denied","reason":"outside the roots \u009b2J and then a reason long enough to be clipped at the end"}"#.utf8))
        let row = AuditTable.row(hostile)
        #expect(!row.unicodeScalars.contains { $0.isControlCharacter }, "\(row)")
        #expect(row.contains(#"/tmp/\u001B[31mred\u0007"#), "\(row)")
        #expect(row.count <= 120 && AuditTable.header.count <= 120, "\(row)")
        #expect(row.hasPrefix("12-01 13:05:00 abcdef01 cap.denied    file.read_bytes"), "\(row)")
        #expect(row.hasSuffix("…"), "\(row)")
    }

    @Test func jsonForATerminalEscapesWhatJSONLeavesRaw() {
        let line = Array(#"{"a":"x"#.utf8) + [0x7f, 0xc2, 0x9b, 0xc2, 0xa0] + Array(#""}"#.utf8)
        #expect(AuditJSON.line(line, forTerminal: false) == line + [10])
        #expect(String(decoding: AuditJSON.line(line, forTerminal: true), as: UTF8.self) == "{\"a\":\"x\\u007f\\u009b\u{a0}\"}\n")
    }
}
