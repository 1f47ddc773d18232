import CapsulePolicy
import CapsuleProtocol

/// Something the sandboxed code may ask the supervisor to do, method by method. The broker
/// validates every call against `methods`, applies the policy, audits and limits it; `invoke`
/// only does the work (and the checks only the capability can make, such as file roots).
public protocol Capability: Sendable {
    /// The policy table's name: `file`, `net`, or `custom.NAME` for a plugin or a Swift program's own.
    var name: String { get }
    /// One line for `help()` in Python and `capsule capabilities list`.
    var summary: String { get }
    var methods: [Method] { get }
    /// Does the work of one admitted call. Runs on the broker's tasks: it may take its time (the
    /// session keeps streaming and enforcing its limits), and it is cancelled when the session ends.
    func invoke(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue
    /// Does the work of an admitted `immediate` method on the session's thread.
    func invokeImmediately(_ method: Method, _ arguments: Arguments, context: CallContext) throws(CapabilityError) -> JSONValue
    /// The session ended: release what outlives a call (net's WebSockets).
    func sessionEnded()
}

extension Capability {
    public func invoke(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue {
        try invokeImmediately(method, arguments, context: context)
    }

    public func invokeImmediately(_ method: Method, _ arguments: Arguments, context: CallContext) throws(CapabilityError) -> JSONValue {
        throw .runtime("\(name).\(method.name) cannot be answered immediately")
    }

    public func sessionEnded() {}
}

/// A method the code can call: `file.read_text(path)`.
public struct Method: Sendable {
    public let name: String
    /// The docstring Python shows.
    public let doc: String
    public let parameters: [Parameter]
    /// The lowest policy level at which the method may be used.
    public let level: Level
    /// Cheap and never blocking (`env.get`): answered on the session's own thread, in order with
    /// the code's output, without a task.
    public let immediate: Bool
    /// Whether a call counts against the table's `rate_per_minute` (waiting for a WebSocket
    /// message does not).
    public let counted: Bool

    public init(_ name: String, level: Level, parameters: [Parameter] = [], immediate: Bool = false, counted: Bool = true,
                doc: String) {
        self.name = name
        self.doc = doc
        self.parameters = parameters
        self.level = level
        self.immediate = immediate
        self.counted = counted
    }
}

public struct Parameter: Sendable {
    public enum Kind: String, Sendable {
        case string, integer, number, boolean, bytes, object, array
        /// A string or bytes: `file.append(path, data)`.
        case text
        case any
    }

    /// How the audit log shows the argument.
    public enum Audit: Sendable {
        /// As it is (clipped): a path, a URL, SQL text, a name.
        case shown
        /// Only its size: data such as file contents, a body or query parameters.
        case size
        /// Header names with values, credential-carrying ones redacted.
        case headers
    }

    public let name: String
    public let kind: Kind
    /// nil: the argument is required.
    public let defaultValue: JSONValue?
    public let audit: Audit

    /// `audit` defaults to `.shown` for strings, numbers and booleans and to `.size` for the rest.
    public init(_ name: String, _ kind: Kind, default defaultValue: JSONValue? = nil, audit: Audit? = nil) {
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.audit = audit ?? ([.string, .integer, .number, .boolean].contains(kind) ? .shown : .size)
    }
}

/// A call's arguments after the broker checked them against the method's parameters: every
/// parameter is present (defaults filled in) with the right kind, so the accessors cannot fail
/// for a declared parameter.
public struct Arguments: Sendable {
    public let values: [String: JSONValue]

    public func string(_ name: String) -> String { values[name]?.stringValue ?? "" }
    public func optionalString(_ name: String) -> String? { values[name]?.stringValue }
    public func int(_ name: String) -> Int { values[name]?.intValue ?? 0 }
    public func optionalInt(_ name: String) -> Int? { values[name]?.intValue }
    public func double(_ name: String) -> Double? { values[name]?.doubleValue }
    public func bool(_ name: String) -> Bool { values[name]?.boolValue ?? false }
    public func bytes(_ name: String) -> [UInt8] { values[name]?.bytesValue ?? [] }
    /// A `text` parameter's bytes: a string's UTF-8, or the bytes themselves.
    public func data(_ name: String) -> [UInt8] {
        if let text = values[name]?.stringValue { return Array(text.utf8) }
        return bytes(name)
    }
    public subscript(name: String) -> JSONValue? { values[name] }
}

/// What a capability knows of the call it serves.
public struct CallContext: Sendable {
    public let policy: Policy
    /// The table's `max_bytes`: the most a call may read or write.
    public let maxBytes: Int?
    public let capability: String
    public let method: String
    /// Who answers `capsule.ask()` and approvals: the session's person or program.
    public let approver: (any Approver)?
}
