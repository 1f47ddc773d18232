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

    /// Each argument clipped to 200 characters; bytes become their length.
    static func summary(of arguments: JSONValue) -> JSONValue {
        guard let members = arguments.objectValue else { return .null }
        return .object(members.map { ($0.0, brief($0.1)) })
    }

    static func summary(of arguments: Arguments, method: Method) -> JSONValue {
        .object(method.parameters.compactMap { parameter in arguments[parameter.name].map { (parameter.name, brief($0)) } })
    }

    private static func brief(_ value: JSONValue) -> JSONValue {
        if let bytes = value.bytesValue { return .string("<\(bytes.count) bytes>") }
        switch value {
        case .string(let text) where text.count > 200: return .string(String(text.prefix(200)) + "…")
        case .array(let elements): return elements.count > 20 ? .string("<list of \(elements.count)>") : .array(elements.map(brief))
        case .object(let members): return members.count > 20 ? .string("<dict of \(members.count)>") : .object(members.map { ($0.0, brief($0.1)) })
        default: return value
        }
    }
}

/// Receives every capability call and approval (the audit log, a test, a metrics counter).
public protocol AuditSink: Sendable {
    func call(_ record: AuditRecord)
    func approval(_ request: ApprovalRequest, decision: ApprovalDecision)
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
}

/// Whoever runs the session: a person at a terminal, a program given with `--approver`, a client.
public protocol Approver: Sendable {
    /// Waits for the decision; the broker's task is cancelled if the session ends first.
    func decide(_ request: ApprovalRequest, policy: Policy) async -> ApprovalDecision
}
