#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// One session's view of an audit log: every event it writes names the session and its policy
/// (name and SHA-256). Give the same one to the session and to its broker.
public final class SessionAudit: AuditSink {
    public let log: AuditLog
    public let session: String
    private let policyMembers: AuditMembers

    public init(log: AuditLog, policy: Policy, session: String = SessionAudit.newSessionID()) {
        self.log = log
        self.session = session
        policyMembers = AuditMembers([("policy", .string(policy.origin)), ("policy_sha256", .string(policy.digest))])
    }

    /// 16 random hex digits.
    public static func newSessionID() -> String {
        var generator = SystemRandomNumberGenerator()
        return withUnsafeBytes(of: generator.next() as UInt64) { Array($0) }.hexText
    }

    public func call(_ record: AuditRecord) throws(AuditFailure) {
        let kind: AuditEvent.Kind = record.decision == .denied ? .capDenied : .capCall
        try log.append(kind.rawValue, session: session, shared: policyMembers) { line in
            line.member("capability", string: record.capability)
            line.member("method", string: record.method)
            line.member("args", record.summary)
            line.member("decision", string: record.decision.rawValue)
            if let reason = record.reason { line.member("reason", string: reason.clipped(to: 1000)) }
            line.member("bytes", integer: record.bytes)
            line.member("ms", milliseconds: record.seconds)
        }
    }

    public func approval(_ request: ApprovalRequest, decision: ApprovalDecision) throws(AuditFailure) {
        var fields: [(String, JSONValue)] = [
            ("capability", .string(request.capability)), ("method", .string(request.method)), ("args", request.summary),
        ]
        switch decision {
        case .approved: fields.append(("decision", "approved"))
        case .denied(let why), .interrupted(let why): fields += [("decision", "denied"), ("reason", .string(why.clipped(to: 1000)))]
        }
        try write(.approval, fields)
    }

    public func event(_ event: AuditEvent) throws(AuditFailure) {
        try write(event.kind, event.fields)
        // A session's end is on disk before the run reports it (fsync = "batch" and "always").
        if event.kind == .sessionEnd { try log.flush() }
    }

    public func check() throws(AuditFailure) { try log.check() }

    private func write(_ kind: AuditEvent.Kind, _ fields: [(String, JSONValue)]) throws(AuditFailure) {
        try log.append(kind.rawValue, session: session, shared: policyMembers, fields)
    }
}

extension Policy {
    /// SHA-256 of the effective policy's settings (`capsule policy show` without its first
    /// comment line): the same for the same rules, wherever they were loaded from.
    public var digest: String {
        let text = tomlText.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).dropFirst().joined()
        return SHA256.hash(Array(text.utf8)).hexText
    }
}

extension SessionAudit {
    /// A session's view of the audit log the policy's `[audit]` table or `path` (`--audit`, the
    /// server's own log) names; nil when neither does.
    public static func opened(for policy: Policy, path: String?) -> Result<SessionAudit?, AuditFailure> {
        if policy.audit != nil, policy.audit?.path == nil, path == nil {
            return .failure(AuditFailure("the policy \(policy.origin) has an [audit] table without a path: set path there or pass --audit FILE"))
        }
        guard let options = AuditOptions(policy.audit, path: path) else { return .success(nil) }
        if options.path.isEmpty { return .failure(AuditFailure("--audit needs a file name")) }
        return Result { () throws(AuditFailure) in SessionAudit(log: try AuditLog.shared(options), policy: policy) }
    }
}
