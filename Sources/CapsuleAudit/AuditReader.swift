import CapsuleCapabilities
import CapsuleOS
import CapsuleProtocol

/// One line of an audit log as read back: its bytes (what the chain digests) and, when it is a
/// JSON object, its fields.
public struct AuditLine: Sendable {
    /// 1-based, within its file.
    public let number: Int
    public let file: String
    public let bytes: [UInt8]
    /// nil when the line is not a JSON object (torn or edited).
    public let event: JSONValue?
    /// Whether the line ended with a newline (the last line of a torn file does not).
    public let terminated: Bool

    public var kind: String? { event?["kind"]?.stringValue }
    public var seq: Int? { event?["seq"]?.intValue }
    public var session: String? { event?["session"]?.stringValue }
}

/// Reads audit logs back, for `audit show`, `stats`, `verify` and `policy learn`.
public enum AuditReader {
    /// Every line of one file, in order.
    public static func lines(of path: String) throws(AuditFailure) -> [AuditLine] {
        let bytes: [UInt8]
        do { bytes = try OS.readFile(path, limit: 1 << 34) } catch {
            throw AuditFailure("cannot read the audit log \(path): \(OS.errorText(error.errno))")
        }
        return lines(in: bytes, file: path)
    }

    static func lines(in bytes: [UInt8], file: String) -> [AuditLine] {
        var out: [AuditLine] = []
        var start = 0
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n"))
            let line = Array(bytes[start..<(end ?? bytes.count)])
            let event = (try? JSONValue.parse(line)).flatMap { $0.objectValue == nil ? nil : $0 }
            out.append(AuditLine(number: out.count + 1, file: file, bytes: line, event: event, terminated: end != nil))
            start = (end ?? bytes.count) + 1
        }
        return out
    }

    /// The files of a log in chain order: given the live file `path`, its rotated archives
    /// `path.1`, `path.2`, … first (oldest first), then `path`; any other name alone.
    public static func chainFiles(_ path: String) -> [String] {
        var archives: [String] = []
        var number = 1
        while OS.fileExists("\(path).\(number)") {
            archives.append("\(path).\(number)")
            number += 1
        }
        return archives + [path]
    }

    /// The events of every line that parsed, in order, from the given files (each expanded with
    /// its archives as `chainFiles` does).
    public static func events(_ paths: [String]) throws(AuditFailure) -> [JSONValue] {
        var out: [JSONValue] = []
        for path in paths.flatMap(chainFiles) {
            out += try lines(of: path).compactMap(\.event)
        }
        return out
    }
}
