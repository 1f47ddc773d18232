import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// The capabilities capsule itself provides, for the tables a policy has.
public enum BuiltinCapabilities {
    public static func granted(by policy: Policy) -> [any Capability] {
        let capabilities = policy.capabilities
        var granted: [any Capability] = []
        if capabilities.display != nil { granted.append(DisplayCapability()) }
        if capabilities.input != nil { granted.append(InputCapability()) }
        if let env = capabilities.env { granted.append(EnvCapability(names: env.names)) }
        if let file = capabilities.file { granted.append(FileCapability(file)) }
        if let net = capabilities.net { granted.append(NetCapability(net)) }
        if let db = capabilities.db { granted.append(DBCapability(db)) }
        for (name, plugin) in capabilities.custom.sorted(by: { $0.key < $1.key }) where plugin.grant.enabled && !plugin.command.isEmpty {
            granted.append(PluginCapability(name: "custom.\(name)", command: plugin.command))
        }
        return granted
    }
}

/// `display(obj)`: a MIME bundle for the client. The session shows it in order with the output.
public struct DisplayCapability: Capability {
    public let name = "display"
    public let summary = "Show rich output (HTML, Markdown, images, JSON) to whoever runs the session."
    public let methods = [
        Method("show", level: .sandbox, parameters: [Parameter("data", .object), Parameter("metadata", .object, default: [:])],
               immediate: true, doc: "Send a MIME bundle {mime type: str}; display(obj) builds it from obj's _repr_*_ methods."),
    ]

    public init() {}

    public func invokeImmediately(_ method: Method, _ arguments: Arguments, context: CallContext) throws(CapabilityError) -> JSONValue {
        guard let bundle = Self.bundle(arguments["data"] ?? .null) else {
            throw .type("display: a MIME bundle maps MIME types such as \"text/html\" to strings")
        }
        guard !bundle.isEmpty else { throw .value("display: the MIME bundle is empty") }
        return .object(bundle.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
    }

    /// The bundle of a `show` call's data or answer: MIME type → text (base64 for images).
    public static func bundle(_ value: JSONValue) -> [String: String]? {
        guard let members = value.objectValue else { return nil }
        var bundle: [String: String] = [:]
        for (type, content) in members {
            guard isMIMEType(type), let text = content.stringValue else { return nil }
            bundle[type] = text
        }
        return bundle
    }

    static func isMIMEType(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        return text.utf8.count <= 255 && parts.count == 2 && parts.allSatisfy { part in
            !part.isEmpty && part.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || "+-.".utf8.contains(byte)
            }
        }
    }
}

/// `capsule.ask(question)`: a yes-or-no question to whoever runs the session. (`input()` travels
/// as `input_request`, gated by the same table.)
public struct InputCapability: Capability {
    public let name = "input"
    public let summary = "Ask whoever runs the session (input() reads a line; ask() a yes-or-no question)."
    public let methods = [
        Method("ask", level: .restricted, parameters: [Parameter("question", .string)],
               doc: "Ask a yes-or-no question of whoever runs the session; True when they say yes."),
    ]

    public init() {}

    public func invoke(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue {
        guard let approver = context.approver else {
            throw .denied("nobody can answer capsule.ask(): this session has no terminal and no --approver")
        }
        let request = ApprovalRequest(capability: "input", method: "ask", summary: ["question": .string(arguments.string("question"))])
        let decision = await approver.decide(request, policy: context.policy)
        return .bool(decision == .approved)
    }
}

/// `env.get(name)`: listed variables of capsule's own environment, read at call time.
public struct EnvCapability: Capability {
    public let name = "env"
    public let summary = "Read the host environment variables the policy lists ([capabilities.env] names)."
    public let methods = [
        Method("get", level: .restricted, parameters: [Parameter("name", .string), Parameter("default", .any, default: .null)],
               immediate: true, doc: "The host's value of a listed variable, or default when it is unset."),
        Method("names", level: .restricted, immediate: true, doc: "The variable names the policy lists."),
    ]
    let names: [String]

    public init(names: [String]) { self.names = names }

    public func invokeImmediately(_ method: Method, _ arguments: Arguments, context: CallContext) throws(CapabilityError) -> JSONValue {
        if method.name == "names" { return .array(names.map(JSONValue.string)) }
        let variable = arguments.string("name")
        guard names.contains(variable) else {
            throw .denied("`\(variable)` is not one of the names in [capabilities.env] (\(names.joined(separator: ", ")))")
        }
        return OS.environment(variable).map(JSONValue.string) ?? (arguments["default"] ?? .null)
    }
}
