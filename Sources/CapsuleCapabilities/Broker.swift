import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import Synchronization

/// A call as the code made it.
public struct CapabilityCall: Sendable, Equatable {
    public let id: String
    public let capability: String
    public let method: String
    public let arguments: JSONValue

    public init(id: String, capability: String, method: String, arguments: JSONValue) {
        self.id = id
        self.capability = capability
        self.method = method
        self.arguments = arguments
    }
}

/// The one place every capability call passes: it is validated, checked against the policy
/// table, rate- and size-limited, approved by a person where the table says `ask`, handed to the
/// audit hook, performed outside the sandbox and answered. One broker serves one session.
public final class Broker: Sendable {
    public let policy: Policy
    private let registry: [String: any Capability]
    private let audit: (any AuditSink)?
    private let approver: (any Approver)?
    private let limiter = Mutex(RateLimiter())
    private let counts = Mutex(CallCounts())

    /// Every call the broker answered, and how many of them it denied, per capability.
    public var callCounts: CallCounts { counts.withLock { $0 } }

    /// The capabilities the policy grants, built in and custom (`extra`, e.g. a Swift program's
    /// own); a capability whose table is absent or disabled is not reachable at all.
    public init(policy: Policy, extra: [any Capability] = [], audit: (any AuditSink)? = nil,
                approver: (any Approver)? = nil) {
        self.policy = policy
        self.audit = audit
        self.approver = approver
        var registry: [String: any Capability] = [:]
        for capability in BuiltinCapabilities.granted(by: policy) + extra
        where Grants.grant(capability.name, in: policy)?.enabled == true {
            registry[capability.name] = capability
        }
        self.registry = registry
    }

    /// The granted capabilities, sorted by name.
    public var capabilities: [any Capability] { registry.values.sorted { $0.name < $1.name } }

    /// What the worker shows the code (the `configure` message): each granted capability with its
    /// methods, parameters and docstrings.
    public var configuration: JSONValue {
        .array(capabilities.map { capability in
            .object([
                ("name", .string(capability.name)),
                ("doc", .string(capability.summary)),
                ("methods", .array(capability.methods.map { method in
                    let note = method.level > policy.level ? "\n\n(Needs a policy of level \(method.level.rawValue) or above.)" : ""
                    return .object([
                        ("name", .string(method.name)),
                        ("doc", .string(method.doc + note)),
                        ("params", .array(method.parameters.map { parameter in
                            .object([("name", .string(parameter.name)), ("kind", .string(parameter.kind.rawValue))]
                                    + (parameter.defaultValue.map { [("default", $0)] } ?? []))
                        })),
                    ])
                })),
            ])
        })
    }

    /// How the broker will answer a call.
    public enum Admission: Sendable {
        /// Decided now: refused, or an immediate method's answer.
        case answered(CapabilityReply)
        /// Admitted; `perform` does the work (on a task: it may wait for the network or a person).
        case admitted(AdmittedCall)
    }

    public struct AdmittedCall: Sendable {
        let call: CapabilityCall
        let capability: any Capability
        let method: Method
        let arguments: Arguments
        let context: CallContext
        let ask: Bool
        let started: UInt64
    }

    /// Checks a call synchronously; immediate methods are answered here too.
    public func admit(_ call: CapabilityCall) -> Admission {
        let started = OS.now()
        // Fail closed: nothing proceeds that the audit log could not record.
        do throws(AuditFailure) { try audit?.check() } catch { return .answered(Self.unaudited(error).reply) }
        let checked: AdmittedCall
        switch check(call, started: started) {
        case .failure(let error):
            return .answered(record(call, nil, error.reply, decision: error.isDenial ? .denied : .failed,
                                    reason: error.message, bytes: 0, started: started))
        case .success(let admitted):
            checked = admitted
        }
        guard checked.method.immediate, !checked.ask else { return .admitted(checked) }
        return .answered(finish(checked, Result { () throws(CapabilityError) in
            try checked.capability.invokeImmediately(checked.method, checked.arguments, context: checked.context)
        }))
    }

    /// Does an admitted call's work: asks a person first where the table says `ask`.
    public func perform(_ admitted: AdmittedCall) async -> CapabilityReply {
        if admitted.ask {
            let request = ApprovalRequest(capability: admitted.call.capability, method: admitted.call.method,
                                          summary: AuditRecord.summary(of: admitted.arguments, method: admitted.method))
            let decision = await approver?.decide(request, policy: policy)
                ?? .denied("nobody can approve it: the policy says ask = true, and this session has no terminal and no --approver")
            do throws(AuditFailure) { try audit?.approval(request, decision: decision) } catch { return Self.unaudited(error).reply }
            switch decision {
            case .approved: break
            case .denied(let why):
                let error = CapabilityError.denied("\(admitted.call.capability).\(admitted.call.method) was not approved: \(why)")
                return record(admitted, error.reply, decision: .denied, reason: error.message, bytes: 0)
            case .interrupted(let why):
                let error = CapabilityError(exception: "KeyboardInterrupt", "\(admitted.call.capability).\(admitted.call.method) was not approved: \(why)")
                return record(admitted, error.reply, decision: .denied, reason: error.message, bytes: 0)
            }
            if admitted.method.immediate {
                return finish(admitted, Result { () throws(CapabilityError) in
                    try admitted.capability.invokeImmediately(admitted.method, admitted.arguments, context: admitted.context)
                })
            }
        }
        do {
            let value = try await admitted.capability.invoke(admitted.method, admitted.arguments, context: admitted.context)
            return finish(admitted, .success(value))
        } catch {
            return finish(admitted, .failure(Task.isCancelled ? .runtime("the call was cancelled: the session ended") : error))
        }
    }

    /// The session ended: each capability releases what outlives its calls.
    public func sessionEnded() {
        for capability in registry.values { capability.sessionEnded() }
    }

    // MARK: Internals

    private func check(_ call: CapabilityCall, started: UInt64) -> Result<AdmittedCall, CapabilityError> {
        guard let capability = registry[call.capability] else {
            return .failure(.denied(Grants.whyNotGranted(call.capability, in: policy)))
        }
        guard let method = capability.methods.first(where: { $0.name == call.method }) else {
            let names = capability.methods.map(\.name).joined(separator: ", ")
            return .failure(CapabilityError(exception: "AttributeError",
                                            "`\(call.capability)` has no method `\(call.method)`; it has: \(names)"))
        }
        guard method.level <= policy.level else {
            return .failure(.denied("\(call.capability).\(method.name) needs a policy of level \(method.level.rawValue) or above; "
                + "this policy (\(policy.origin)) is level \(policy.level.rawValue)"))
        }
        let arguments: Arguments
        switch Self.validate(call.arguments, for: method, of: call.capability) {
        case .success(let valid): arguments = valid
        case .failure(let error): return .failure(error)
        }
        let grant = Grants.grant(call.capability, in: policy) ?? CapabilityGrant()
        let table = Grants.table(call.capability)
        if let limit = grant.maxBytes {
            let size = Self.payloadBytes(arguments, of: method)
            if size > limit {
                return .failure(.denied("\(call.capability).\(method.name) carries \(size) bytes, more than \(table) max_bytes = \(limit) allows"))
            }
        }
        if let rate = grant.ratePerMinute, method.counted, !limiter.withLock({ $0.admit(call.capability, rate: rate, now: started) }) {
            return .failure(.denied("rate limit: \(table) rate_per_minute = \(rate), and this call would be call \(rate + 1) within a minute"))
        }
        let context = CallContext(policy: policy, maxBytes: grant.maxBytes, capability: call.capability,
                                  method: method.name, approver: approver)
        return .success(AdmittedCall(call: call, capability: capability, method: method, arguments: arguments,
                                     context: context, ask: grant.ask, started: started))
    }

    /// Audits the outcome and caps what goes back at `max_bytes`.
    private func finish(_ admitted: AdmittedCall, _ result: Result<JSONValue, CapabilityError>) -> CapabilityReply {
        let call = admitted.call
        switch result {
        case .success(let value):
            let size = Self.answerBytes(value)
            if let limit = admitted.context.maxBytes, size > limit {
                let error = CapabilityError.denied("the answer of \(call.capability).\(call.method) is \(size) bytes, more than "
                    + "\(Grants.table(call.capability)) max_bytes = \(limit) allows")
                return record(admitted, error.reply, decision: .denied, reason: error.message, bytes: size)
            }
            return record(admitted, .value(value), decision: .allowed, reason: nil,
                          bytes: size + Self.payloadBytes(admitted.arguments, of: admitted.method))
        case .failure(let error):
            return record(admitted, error.reply, decision: error.isDenial ? .denied : .failed, reason: error.message, bytes: 0)
        }
    }

    private func record(_ admitted: AdmittedCall, _ reply: CapabilityReply, decision: AuditRecord.Decision,
                        reason: String?, bytes: Int) -> CapabilityReply {
        record(admitted.call, AuditRecord.summary(of: admitted.arguments, method: admitted.method), reply,
               decision: decision, reason: reason, bytes: bytes, started: admitted.started)
    }

    /// Hands the call's record to the audit hook and returns `reply`, or, when the record cannot
    /// be written, the failure instead: the code gets no answer the log does not hold.
    private func record(_ call: CapabilityCall, _ summary: JSONValue?, _ reply: CapabilityReply, decision: AuditRecord.Decision,
                        reason: String?, bytes: Int, started: UInt64) -> CapabilityReply {
        counts.withLock { $0.add(call.capability, denied: decision == .denied) }
        guard let audit else { return reply }
        do throws(AuditFailure) {
            try audit.call(AuditRecord(capability: call.capability, method: call.method,
                                       summary: summary ?? AuditRecord.summary(of: call.arguments), decision: decision,
                                       reason: reason, bytes: bytes, seconds: Double(OS.now() - started) / 1e9))
        } catch {
            return Self.unaudited(error).reply
        }
        return reply
    }

    static func unaudited(_ failure: AuditFailure) -> CapabilityError {
        .denied("\(failure.message); no capability call proceeds until it can be written")
    }

    /// The arguments with defaults filled in, or a TypeError naming the parameter.
    static func validate(_ json: JSONValue, for method: Method, of capability: String) -> Result<Arguments, CapabilityError> {
        let name = "\(capability).\(method.name)()"
        guard let members = json.objectValue else { return .failure(.type("\(name): the arguments are not an object")) }
        var values: [String: JSONValue] = [:]
        for (key, value) in members {
            guard method.parameters.contains(where: { $0.name == key }) else {
                return .failure(.type("\(name) got an unexpected keyword argument '\(key)'"))
            }
            values[key] = value
        }
        for parameter in method.parameters {
            guard let value = values[parameter.name], !(value.isNull && parameter.defaultValue?.isNull == true) else {
                if let defaultValue = parameter.defaultValue {
                    values[parameter.name] = defaultValue
                    continue
                }
                return .failure(.type("\(name) missing required argument '\(parameter.name)'"))
            }
            guard parameter.kind.accepts(value) else {
                return .failure(.type("\(name): '\(parameter.name)' must be \(parameter.kind.noun), not \(value.pythonKind)"))
            }
        }
        return .success(Arguments(values: values))
    }

    /// Bytes a value carries: strings' UTF-8 and bytes' length (what `max_bytes` counts).
    static func payloadBytes(_ value: JSONValue) -> Int {
        if let bytes = value.bytesValue { return bytes.count }
        switch value {
        case .string(let text): return text.utf8.count
        case .array(let elements): return elements.reduce(0) { $0 + payloadBytes($1) }
        case .object(let members): return members.reduce(0) { $0 + payloadBytes($1.1) }
        default: return 0
        }
    }

    /// The data an answer carries: its bytes where it has some (a file, a response body; not the
    /// headers and names around them), else its text.
    static func answerBytes(_ value: JSONValue) -> Int {
        func bytes(_ value: JSONValue) -> Int? {
            if let data = value.bytesValue { return data.count }
            let inner: [JSONValue] = switch value {
            case .array(let elements): elements
            case .object(let members): members.map(\.1)
            default: []
            }
            let counts = inner.compactMap(bytes)
            return counts.isEmpty ? nil : counts.reduce(0, +)
        }
        return bytes(value) ?? payloadBytes(value)
    }

    /// The data a call carries: names, paths and URLs (plain string parameters) do not count.
    static func payloadBytes(_ arguments: Arguments, of method: Method) -> Int {
        method.parameters.filter { $0.kind != .string }.reduce(0) { total, parameter in
            total + (arguments[parameter.name].map(payloadBytes) ?? 0)
        }
    }
}

extension Parameter.Kind {
    func accepts(_ value: JSONValue) -> Bool {
        switch self {
        case .any: true
        case .string: value.stringValue != nil
        case .integer: value.intValue != nil
        case .number: value.doubleValue != nil
        case .boolean: value.boolValue != nil
        case .bytes: value.bytesValue != nil
        case .text: value.stringValue != nil || value.bytesValue != nil
        case .array: value.arrayValue != nil
        case .object: value.objectValue != nil && value.bytesValue == nil
        }
    }

    var noun: String {
        switch self {
        case .any: "anything"
        case .string: "str"
        case .integer: "int"
        case .number: "a number"
        case .boolean: "bool"
        case .bytes: "bytes"
        case .text: "str or bytes"
        case .array: "a list"
        case .object: "a dict"
        }
    }
}

extension JSONValue {
    /// The Python type name of what the code passed.
    var pythonKind: String {
        if bytesValue != nil { return "bytes" }
        switch self {
        case .null: return "None"
        case .bool: return "bool"
        case .number(let value): return Int(exactly: value) == nil ? "float" : "int"
        case .string: return "str"
        case .array: return "list"
        case .object: return "dict"
        }
    }
}

/// Calls per capability in the last minute, for `rate_per_minute`.
struct RateLimiter {
    private var calls: [String: [UInt64]] = [:]

    mutating func admit(_ capability: String, rate: Int, now: UInt64) -> Bool {
        let minuteAgo = now > 60_000_000_000 ? now - 60_000_000_000 : 0
        var recent = calls[capability, default: []]
        recent.removeAll { $0 <= minuteAgo }
        guard recent.count < rate else {
            calls[capability] = recent
            return false
        }
        recent.append(now)
        calls[capability] = recent
        return true
    }
}

/// Capability calls a session made, for `capsule run --report`.
public struct CallCounts: Sendable, Equatable {
    public struct Count: Sendable, Equatable {
        public var calls = 0, denied = 0
    }
    public private(set) var total = Count()
    public private(set) var byCapability: [String: Count] = [:]

    public init() {}

    mutating func add(_ capability: String, denied: Bool) {
        // A name the code made up counts under one key, so a flood of names costs nothing.
        let key = byCapability[capability] != nil || byCapability.count < 64 ? capability : "(other)"
        byCapability[key, default: Count()].calls += 1
        total.calls += 1
        if denied {
            byCapability[key, default: Count()].denied += 1
            total.denied += 1
        }
    }
}
