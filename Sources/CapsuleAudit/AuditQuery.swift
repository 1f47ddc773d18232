import CapsuleCapabilities
import CapsuleOS
import CapsuleProtocol

/// Which events `audit show`, `tail` and `stats` keep. Each option holds any of its values; the
/// options combine (AND). An empty option keeps every event.
public struct AuditFilter: Sendable {
    /// Session ids, or their first characters (as the table shows them).
    public var sessions: [String] = []
    /// Event kinds (`cap.denied`), or a family before the dot (`cap`, `exec`, `session`).
    public var kinds: [String] = []
    /// Capabilities (`file`) or one method of one (`file.read_bytes`).
    public var capabilities: [String] = []
    /// Only events whose `decision` is `denied` (cap.denied, and approvals a person refused).
    public var deniedOnly = false
    /// Only events at or after this time (microseconds since 1970, UTC).
    public var since: Int64?

    public init() {}

    /// Every kind a log holds: the writer's own two, then a session's.
    public static let knownKinds = ["audit.start", "audit.rotated"] + AuditEvent.Kind.allCases.map(\.rawValue)

    /// A sentence naming the first `--kind` value that is neither a kind nor a family of kinds.
    public static func kindProblem(_ kinds: [String]) -> String? {
        let families = Set(knownKinds.map { String($0.split(separator: ".")[0]) })
        guard let bad = kinds.first(where: { !knownKinds.contains($0) && !families.contains($0) }) else { return nil }
        return "`\(bad.escapingControlCharacters)` is not an event kind; the kinds are \(knownKinds.joined(separator: ", ")) "
            + "(or a family such as `cap` or `exec`)"
    }

    public func matches(_ event: JSONValue) -> Bool {
        if !sessions.isEmpty {
            guard let session = event["session"]?.stringValue, sessions.contains(where: { session.hasPrefix($0) }) else { return false }
        }
        if !kinds.isEmpty {
            guard let kind = event["kind"]?.stringValue else { return false }
            let family = kind.split(separator: ".").first.map(String.init) ?? kind
            guard kinds.contains(where: { $0 == kind || $0 == family }) else { return false }
        }
        if !capabilities.isEmpty {
            guard let capability = event["capability"]?.stringValue else { return false }
            let call = "\(capability).\(event["method"]?.stringValue ?? "")"
            guard capabilities.contains(where: { $0 == capability || $0 == call }) else { return false }
        }
        if deniedOnly && event["decision"]?.stringValue != "denied" { return false }
        if let since {
            guard let ts = event["ts"]?.stringValue.flatMap(AuditTime.microseconds), ts >= since else { return false }
        }
        return true
    }
}

/// Times as the log writes them (RFC 3339, UTC, µs) and as `--since` takes them.
public enum AuditTime {
    /// Microseconds since 1970 of an RFC 3339 time (`2026-12-01T13:05:00Z`, a fraction and a
    /// `±HH:MM` offset allowed; `T` may be a space), or of a date alone (its midnight, UTC).
    public static func microseconds(_ text: String) -> Int64? {
        let chars = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int64? {
            guard from + count <= chars.count else { return nil }
            var value: Int64 = 0
            for byte in chars[from..<from + count] {
                guard (48...57).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            return value
        }
        guard let year = number(0, 4), chars.count >= 10, chars[4] == UInt8(ascii: "-"), let month = number(5, 2),
              chars[7] == UInt8(ascii: "-"), let day = number(8, 2), (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        let midnight = days(year: year, month: month, day: day) * 86_400_000_000
        if chars.count == 10 { return midnight }
        guard [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(chars[10]), let hour = number(11, 2),
              chars.count > 13, chars[13] == UInt8(ascii: ":"), let minute = number(14, 2),
              chars.count > 16, chars[16] == UInt8(ascii: ":"), let second = number(17, 2),
              hour < 24, minute < 60, second < 61
        else { return nil }
        var index = 19
        var fraction: Int64 = 0
        if index < chars.count, chars[index] == UInt8(ascii: ".") {
            index += 1
            var scale: Int64 = 100_000
            let start = index
            while index < chars.count, (48...57).contains(chars[index]) {
                fraction += Int64(chars[index] - 48) * scale
                scale /= 10
                index += 1
            }
            if index == start { return nil }
        }
        var offset: Int64
        if index + 1 == chars.count, chars[index] | 0x20 == UInt8(ascii: "z") {
            offset = 0
        } else if index + 6 == chars.count, chars[index] == UInt8(ascii: "+") || chars[index] == UInt8(ascii: "-"),
                  let hours = number(index + 1, 2), chars[index + 3] == UInt8(ascii: ":"), let minutes = number(index + 4, 2) {
            offset = (hours * 60 + minutes) * 60_000_000
            if chars[index] == UInt8(ascii: "-") { offset = -offset }
        } else {
            return nil
        }
        return midnight + ((hour * 60 + minute) * 60 + second) * 1_000_000 + fraction - offset
    }

    /// `--since`: an RFC 3339 time or date, or a span back from `now` (`90s`, `10m`, `2h`, `1d`,
    /// `1.5h`); nil when it is neither.
    public static func since(_ text: String, now: Int64) -> Int64? {
        if let time = microseconds(text) { return time }
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800]
        guard let unit = text.last.flatMap({ units[$0] }), let amount = Double(text.dropLast()), amount >= 0, amount.isFinite
        else { return nil }
        return now - Int64(amount * unit * 1e6)
    }

    /// The wall clock now, read the way the log's own `ts` is.
    public static var now: Int64 { microseconds(OS.timestamp()) ?? 0 }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

/// The lines of audit logs as `show`, `tail` and `stats` read them: each file with its archives
/// (in chain order, each file once), each checked to be a log at all.
public enum AuditLogFiles {
    public static func lines(_ paths: [String]) throws(AuditFailure) -> [AuditLine] {
        var seen: Set<String> = []
        var out: [AuditLine] = []
        for file in paths.flatMap(AuditReader.chainFiles) where seen.insert(OS.normalizedPath(file)).inserted {
            let lines = try AuditReader.lines(of: file)
            try check(lines, file: file)
            out += lines
        }
        return out
    }

    /// Throws unless `lines` (all of one file) start as every log does: with an event.
    public static func check(_ lines: [AuditLine], file: String) throws(AuditFailure) {
        let name = file.escapingControlCharacters
        guard let first = lines.first else {
            throw AuditFailure("\(name) is empty, so it is not an audit log (every log starts with an `audit.start` line)")
        }
        guard first.kind != nil, first.seq != nil else {
            throw AuditFailure("\(name) is not an audit log: its first line is not an audit event "
                + "(give the file that the policy's [audit] path or `--audit` names)")
        }
    }

    /// The note for a line that is not an event (torn by a crash, or edited).
    public static func note(_ line: AuditLine) -> String {
        "note: \(line.file.escapingControlCharacters) line \(line.number) is not an audit event and is left out "
            + "(`capsule audit verify` says whether the log was changed)"
    }
}
