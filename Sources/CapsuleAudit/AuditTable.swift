import CapsuleOS
import CapsuleProtocol

/// The readable table of `audit show` and `tail`: one event a line, 120 columns at most, every
/// logged string with its control characters escaped (a log holds text the code chose, such as a
/// file name with terminal escapes, and it must never drive the reader's terminal).
public enum AuditTable {
    /// Time (UTC, `MM-DD HH:MM:SS`), session (its first 8 characters), kind, capability.method,
    /// target (path, URL, SQL, … in brief), decision, and the reason or other detail.
    static let widths = [14, 8, 13, 16, 28, 8, 27]

    public static var header: String {
        cells(["TIME (UTC)", "SESSION", "KIND", "CALL", "TARGET", "DECISION", "DETAIL"])
    }

    public static func row(_ event: JSONValue) -> String {
        let kind = event["kind"]?.stringValue ?? "?"
        let ts = event["ts"]?.stringValue ?? ""
        let time = String(readable(ts).dropFirst(5))
        var call = ""
        if let capability = event["capability"]?.stringValue {
            call = capability + (event["method"]?.stringValue.map { ".\($0)" } ?? "")
        }
        let (target, decision, detail) = describe(kind, event)
        return cells([time, String((event["session"]?.stringValue ?? "").prefix(8)), kind, call, target, decision, detail])
    }

    /// The target, decision and detail columns of one kind of event.
    private static func describe(_ kind: String, _ event: JSONValue) -> (String, String, String) {
        func text(_ key: String) -> String? {
            guard let value = event[key], !value.isNull else { return nil }
            return value.stringValue ?? String(decoding: value.serialized(), as: UTF8.self)
        }
        func joined(_ parts: String?...) -> String { parts.compactMap { $0 }.joined(separator: ", ") }
        switch kind {
        case "cap.call", "cap.denied", "approval":
            let measured = joined(text("bytes").map { "\($0) B" }, text("ms").map { "\($0) ms" })
            return (target(event["args"]), text("decision") ?? "", text("reason") ?? measured)
        case "exec.start":
            return (text("filename") ?? "", "", joined(text("code_bytes").map { "\($0) B" },
                                                       text("code_sha256").map { "sha256 \($0.prefix(12))" }))
        case "exec.end":
            return (text("filename") ?? "", text("status") ?? "",
                    joined(text("exit_code").map { "exit \($0)" }, text("signal").map { "signal \($0)" }, text("error"),
                           text("limit"), text("reason"), text("duration_s").map { "\($0) s" }))
        case "limit.hit":
            return (joined(text("limit").map { "\($0) = \(text("value") ?? "?")" }), "", "")
        case "session.start":
            return (text("pid").map { "pid \($0)" } ?? "", "", joined(text("policy").map { "policy \($0)" },
                                                                      text("python").map { "python \($0)" }))
        case "session.end":
            return ("", "", joined(event["executions"]?.intValue.map { counted($0, "execution") }, text("exit_code").map { "exit \($0)" },
                                   text("signal").map { "signal \($0)" }))
        case "policy.loaded":
            return (text("origin") ?? text("policy") ?? "", text("level") ?? "",
                    text("policy_sha256").map { "sha256 \($0.prefix(12))" } ?? "")
        case "sandbox.error":
            return (text("stage") ?? "", "", text("reason") ?? "")
        case "audit.start":
            return (text("chain") ?? "", "", text("continues").map { "continues \($0)" } ?? "")
        case "audit.rotated":
            return (text("next").map { "next \($0)" } ?? "", "", "")
        default:
            return ("", text("decision") ?? "", text("reason") ?? "")
        }
    }

    /// What a call acted on, from its argument summary: the path, URL or SQL (blanks folded), else
    /// its first argument.
    static func target(_ args: JSONValue?) -> String {
        guard let members = args?.objectValue, !members.isEmpty else { return "" }
        let preferred = ["path", "url", "sql", "name", "src", "dst", "question"]
        let (name, value) = preferred.lazy.compactMap { key in members.first { $0.0 == key } }.first ?? members[0]
        let text = value.stringValue ?? String(decoding: value.serialized(), as: UTF8.self)
        return name == "sql" ? text.split(whereSeparator: \.isWhitespace).joined(separator: " ") : text
    }

    /// Cells escaped, clipped (a target from its start, where a path is least telling) and padded.
    static func cells(_ cells: [String]) -> String {
        var out = ""
        for (index, cell) in cells.enumerated() {
            let width = widths[index]
            var text = cell.escapingControlCharacters
            if text.count > width {
                text = index == 4 ? "…" + String(text.suffix(width - 1)) : String(text.prefix(width - 1)) + "…"
            }
            out += index == cells.count - 1 ? text : text + String(repeating: " ", count: width - text.count + 1)
        }
        while out.last == " " { out.removeLast() }
        return out
    }

    /// `2026-12-01 13:05:00` of a logged `ts` (seconds are enough to read; `--json` has the rest).
    static func readable(_ ts: String) -> String {
        ts.count >= 19 ? String(ts.prefix(19).map { $0 == "T" ? " " : $0 }) : ts
    }
}

/// `--json` lines as logged, except that on a terminal DEL and the C1 controls (which JSON leaves
/// unescaped) are written as `\u007f`…`\u009f`: the same JSON value, and no terminal acts on it.
public enum AuditJSON {
    public static func line(_ bytes: [UInt8], forTerminal: Bool) -> [UInt8] {
        guard forTerminal, bytes.contains(where: { $0 == 0x7f || $0 == 0xc2 }) else { return bytes + [UInt8(ascii: "\n")] }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 16)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x7f {
                out += Array("\\u007f".utf8)
            } else if byte == 0xc2, index + 1 < bytes.count, (0x80...0x9f).contains(bytes[index + 1]) {
                out += Array("\\u00\(bytes[index + 1].hexByte)".utf8)
                index += 1
            } else {
                out.append(byte)
            }
            index += 1
        }
        return out + [UInt8(ascii: "\n")]
    }
}

extension UInt8 {
    fileprivate var hexByte: String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(self >> 4)], digits[Int(self & 0xf)]])
    }
}
