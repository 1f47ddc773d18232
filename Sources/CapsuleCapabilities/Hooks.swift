import CapsulePolicy
import CapsuleProtocol

/// What the broker tells the audit log of every call (the audit log itself is its own module).
public struct AuditRecord: Sendable, Equatable {
    public enum Decision: String, Sendable { case allowed, denied, failed }
    public let capability: String
    public let method: String
    /// The arguments in brief: strings clipped, bytes counted, never a secret the broker attached.
    public let summary: JSONValue
    public let decision: Decision
    public let reason: String?
    /// Bytes carried both ways.
    public let bytes: Int
    public let seconds: Double

    public init(capability: String, method: String, summary: JSONValue, decision: Decision, reason: String?,
                bytes: Int, seconds: Double) {
        self.capability = capability
        self.method = method
        self.summary = summary
        self.decision = decision
        self.reason = reason
        self.bytes = bytes
        self.seconds = seconds
    }

    /// Arguments the broker could not check against a method: strings clipped, the rest by size.
    static func summary(of arguments: JSONValue) -> JSONValue {
        guard let members = arguments.objectValue else { return .null }
        return .object(members.map { ($0.0, $0.1.stringValue == nil ? size($0.1) : brief($0.1)) })
    }

    /// Each argument as its parameter says: names, paths, URLs and SQL shown (clipped to 200
    /// characters), data (file contents, bodies, query parameters) only by size, headers with the
    /// values of credential-carrying ones redacted.
    static func summary(of arguments: Arguments, method: Method) -> JSONValue {
        .object(method.parameters.compactMap { parameter in
            arguments[parameter.name].map { value in
                switch parameter.audit {
                case .shown: (parameter.name, brief(value))
                case .size: (parameter.name, size(value))
                case .headers: (parameter.name, headers(value))
                }
            }
        })
    }

    /// Header names whose values are secrets wherever they appear.
    static let secretHeaders: Set<String> = ["authorization", "proxy-authorization", "cookie", "set-cookie",
                                             "x-api-key", "api-key", "x-auth-token", "x-amz-security-token"]

    private static func headers(_ value: JSONValue) -> JSONValue {
        guard let members = value.objectValue, value.bytesValue == nil else { return size(value) }
        return .object(members.prefix(50).map { name, value in
            let secret = secretHeaders.contains(name.lowercased()) || name.lowercased().contains("token")
                || name.lowercased().contains("secret")
            return (name, secret ? .string("<redacted>") : brief(value))
        })
    }

    private static func brief(_ value: JSONValue) -> JSONValue {
        if value.bytesValue != nil { return size(value) }
        switch value {
        case .string(let text) where text.utf8.count > 200 && text.count > 200: return .string(String(text.prefix(200)) + "…")
        case .array, .object: return size(value)
        default: return value
        }
    }

    private static func size(_ value: JSONValue) -> JSONValue {
        if let bytes = value.bytesValue { return .string("<\(bytes.count) bytes>") }
        switch value {
        case .string(let text): return .string("<\(text.utf8.count) bytes>")
        case .array(let elements): return .string("<list of \(elements.count)>")
        case .object(let members): return .string("<dict of \(members.count)>")
        default: return value
        }
    }
}

/// Why the audit log cannot take another event; nothing more may proceed until it can.
public struct AuditFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An event of a session besides its calls and approvals: `session.start`, `exec.end`, ….
public struct AuditEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case sessionStart = "session.start", sessionEnd = "session.end"
        case execStart = "exec.start", execEnd = "exec.end"
        case capCall = "cap.call", capDenied = "cap.denied", approval
        case limitHit = "limit.hit", policyLoaded = "policy.loaded", sandboxError = "sandbox.error"
    }

    public let kind: Kind
    /// The event's own fields, in the order the log writes them.
    public let fields: [(String, JSONValue)]

    public init(_ kind: Kind, _ fields: [(String, JSONValue)]) {
        self.kind = kind
        self.fields = fields
    }

    public static func == (a: AuditEvent, b: AuditEvent) -> Bool {
        a.kind == b.kind && JSONValue.object(a.fields) == JSONValue.object(b.fields)
    }
}

/// Receives every capability call, approval and session event of one session (the audit log, a
/// test, a metrics counter). A sink that throws stops what it was told of: the call is answered
/// with the failure, the execution is not started (fail closed).
public protocol AuditSink: Sendable {
    func call(_ record: AuditRecord) throws(AuditFailure)
    func approval(_ request: ApprovalRequest, decision: ApprovalDecision) throws(AuditFailure)
    func event(_ event: AuditEvent) throws(AuditFailure)
    /// Throws when no further event could be written, before an action starts.
    func check() throws(AuditFailure)
}

extension AuditSink {
    public func event(_ event: AuditEvent) throws(AuditFailure) {}
    public func check() throws(AuditFailure) {}
}

/// A call held for a person's decision (`ask = true`), or a question from `capsule.ask()`.
public struct ApprovalRequest: Sendable, Equatable {
    public let capability: String
    public let method: String
    /// The arguments in brief, as the audit log shows them; for `capsule.ask`, `{"question": …}`.
    public let summary: JSONValue

    public init(capability: String, method: String, summary: JSONValue) {
        self.capability = capability
        self.method = method
        self.summary = summary
    }
}

public enum ApprovalDecision: Sendable, Equatable {
    case approved
    case denied(String)
    /// The person stopped the run instead of answering (^C, the terminal hung up): the call
    /// raises KeyboardInterrupt in the code, as ^C anywhere else does.
    case interrupted(String)
}

/// Whoever runs the session: a person at a terminal, a program given with `--approver`, a client.
public protocol Approver: Sendable {
    /// Waits for the decision; the broker's task is cancelled if the session ends first.
    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision
}
