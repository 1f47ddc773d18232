import CapsuleCapabilities
import CapsuleOS
import CapsuleProtocol

/// What `capsule audit verify` found in a chain of log files.
public struct AuditVerification: Sendable {
    /// The first break: where, and what was done there. nil when the chain holds.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public let file: String
        public let line: Int
        public let text: String
        public var description: String { "\(file):\(line): \(text)" }
    }

    public let problem: Problem?
    public let lines: Int
    public let files: [String]
    /// The digest of the last line: keep it elsewhere (an anchor) to detect a cut tail later.
    public let lastDigest: String?
    /// Why the log's end may be missing lines, or nil when nothing suggests it.
    public let truncation: String?
    /// The chain is keyed (HMAC) and no key was given: only its structure was checked.
    public let keyMissing: Bool
}

/// Checks that each line's `prev` is the digest of the line before it, that `seq` counts up by
/// one, and that the chain starts with `audit.start` at 64 zeros (or continues a rotated file).
public enum AuditVerifier {
    /// `paths`: log files in chain order; a live file brings its archives (`AuditReader.chainFiles`).
    public static func verify(_ paths: [String], keyFile: String? = nil) throws(AuditFailure) -> AuditVerification {
        let files = paths.count == 1 ? AuditReader.chainFiles(paths[0]) : paths
        var lines: [AuditLine] = []
        for file in files { lines += try AuditReader.lines(of: file) }
        let digest = try ChainDigest.load(keyFile)
        let keyed = lines.first?.event?["chain"]?.stringValue == "hmac-sha256"
        let keyMissing = keyed && keyFile == nil
        func done(_ problem: AuditVerification.Problem?, truncation: String? = nil) -> AuditVerification {
            AuditVerification(problem: problem, lines: lines.count, files: files,
                              lastDigest: lines.last.map { digest($0.bytes) }, truncation: truncation, keyMissing: keyMissing)
        }
        guard let first = lines.first else {
            return done(.init(file: files[0], line: 1, text: "the log is empty: its first line, `audit.start`, is missing"))
        }
        if !keyed && keyFile != nil {
            return done(.init(file: first.file, line: 1, text: "a key was given, but this chain is not keyed (its audit.start says \(first.event?["chain"]?.stringValue ?? "nothing"))"))
        }
        if let problem = checkStart(first) { return done(problem) }

        for index in lines.indices.dropFirst() {
            let line = lines[index], before = lines[index - 1]
            let at = { (text: String) in AuditVerification.Problem(file: line.file, line: line.number, text: text) }
            guard let event = line.event, let seq = line.seq, let prev = event["prev"]?.stringValue else {
                if index == lines.count - 1 && !line.terminated {
                    return done(at("incomplete last line: the log's tail was cut (or its writer died mid-line)"),
                                truncation: "the tail was cut mid-line")
                }
                return done(at("not a complete audit event (edited, or torn by a crash)"))
            }
            guard let beforeSeq = before.seq else { continue } // after a torn line, take the chain up again
            if seq != beforeSeq + 1 {
                if seq > beforeSeq + 1, index + 1 < lines.count, lines[index + 1].seq == beforeSeq + 1 {
                    return done(at("lines reordered: seq \(seq) comes before seq \(beforeSeq + 1) (the next line)"))
                }
                if seq > beforeSeq + 1 {
                    let missing = seq - beforeSeq - 1
                    return done(at("\(missing) line\(missing == 1 ? "" : "s") removed before this one (seq \(beforeSeq + 1)\(missing == 1 ? "" : "…\(seq - 1)") missing)"))
                }
                return done(at("a line inserted or moved here: seq \(seq) after seq \(beforeSeq)"))
            }
            if keyMissing { continue }
            if prev != digest(before.bytes) {
                // This line recorded a different line before it: the one before was edited, unless
                // this line itself no longer matches what the next line recorded.
                let intact = index + 1 < lines.count && lines[index + 1].event?["prev"]?.stringValue == digest(line.bytes)
                if intact || index + 1 == lines.count {
                    return done(.init(file: before.file, line: before.number, text: "edited: the line no longer matches the digest the next line recorded"))
                }
                return done(at("edited: its `prev` does not match the line before it"))
            }
            if line.kind == "audit.start" {
                guard event["continues"]?.stringValue != nil else {
                    return done(at("a new chain starts in the middle of the log (audit.start without `continues`)"))
                }
            }
        }
        return done(nil, truncation: openSessions(lines))
    }

    /// The first line must start a chain: `audit.start` at 64 zeros, or one continuing a rotated file.
    private static func checkStart(_ first: AuditLine) -> AuditVerification.Problem? {
        let at = { (text: String) in AuditVerification.Problem(file: first.file, line: 1, text: text) }
        guard let event = first.event, first.kind == "audit.start" else {
            return at("the chain's start is missing: the first line is \(first.kind.map { "`\($0)`" } ?? "not an audit event")"
                + "\(first.seq.map { " (seq \($0))" } ?? ""), not `audit.start`; lines were removed from the front, or this is not the whole log")
        }
        let prev = event["prev"]?.stringValue
        if let continues = event["continues"]?.stringValue {
            if prev == genesis { return at("claims to continue \(continues) but starts a new chain") }
            return nil // the rotated file before it was not given: checked from here
        }
        return prev == genesis && first.seq == 1 ? nil : at("`audit.start` does not start at seq 1 with a `prev` of 64 zeros")
    }

    /// Sessions that started and have no `session.end`: the tail may be cut (or they still run).
    private static func openSessions(_ lines: [AuditLine]) -> String? {
        var open: [String] = []
        for line in lines {
            guard let session = line.session else { continue }
            if line.kind == "session.start" || line.kind == "policy.loaded" {
                if !open.contains(session) { open.append(session) }
            } else if line.kind == "session.end" || line.kind == "sandbox.error" {
                open.removeAll { $0 == session }
            }
        }
        guard !open.isEmpty else { return nil }
        let names = open.prefix(5).joined(separator: ", ") + (open.count > 5 ? " and \(open.count - 5) more" : "")
        let one = open.count == 1
        return "\(open.count) session\(one ? "" : "s") (\(names)) started and did not end in this log: "
            + "\(one ? "it" : "they") may still be running, or the tail of the log was cut"
    }
}
