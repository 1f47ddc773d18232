// Typed messages (docs/protocol.md). Decoding checks every member the type needs and ignores
// members it does not know, so either side can add members before the other understands them;
// an unknown `type` is an error.

public enum StreamName: String, Sendable, Equatable, CaseIterable {
    case stdout, stderr
}

public enum ExecutionStatus: String, Sendable, Equatable, CaseIterable {
    case ok, error, interrupted
}

/// Whether code is a whole statement, as Python's interactive console decides (`complete`).
public enum Completeness: String, Sendable, Equatable, CaseIterable {
    case complete, incomplete, invalid
}

/// Worker → supervisor.
public enum WorkerMessage: Sendable, Equatable {
    case ready(pid: Int, python: String)
    case stream(id: String, name: StreamName, text: String)
    /// Output that is not UTF-8 text, to be written byte for byte (`data`, base64, on the wire).
    case streamData(id: String, name: StreamName, data: [UInt8])
    /// `data` is a MIME bundle: MIME type → content.
    case result(id: String, data: [String: String])
    case error(id: String, ename: String, evalue: String, traceback: [String])
    case inputRequest(id: String, prompt: String, password: Bool)
    /// `exitCode` is present only when the code called `sys.exit`.
    case done(id: String, status: ExecutionStatus, duration: Double, exitCode: Int?)
    /// The code called a capability method. `id` is the call's own (calls come from any thread of
    /// the code, between executions too); `arguments` is an object.
    case capCall(id: String, capability: String, method: String, arguments: JSONValue)
    /// The answer to `complete`: whether the code is a whole statement.
    case completeness(id: String, status: Completeness, blankLineCompletes: Bool)
    /// The answer to `checkpoint` (`checkpoint_data` on the wire): the namespace's picklable part
    /// (`data`, base64 on the wire), the names it holds, the names left out and why; or `error`.
    case checkpointData(id: String, data: [UInt8], names: [String], skipped: [String: String], error: String?)
    /// The answer to `restore`: the names restored, those that failed and why; or `error`.
    case restored(id: String, names: [String], skipped: [String: String], error: String?)
    /// The answer to `preload`: the modules that could not be imported and why, and how long it took.
    case preloaded(skipped: [String: String], duration: Double)
}

/// Supervisor → worker.
public enum SupervisorMessage: Sendable, Equatable {
    case execute(id: String, code: String, filename: String, argv: [String], result: Bool)
    /// A script file's bytes (`source`, base64, on the wire), which the worker decodes as CPython
    /// decodes a script: a UTF-8 byte order mark or a PEP 263 coding line, else UTF-8.
    case executeScript(id: String, source: [UInt8], filename: String, argv: [String])
    /// `value` nil means end of input (`eof: true` on the wire).
    case inputReply(id: String, value: String?)
    /// The answer to `cap_call` `id`.
    case capReply(id: String, reply: CapabilityReply)
    /// Sent once, right after `ready`: the capabilities the policy grants, as the worker shows them
    /// to the code (names, methods, parameters, docstrings).
    case configure(capabilities: JSONValue)
    /// Asks, while no execution runs, whether `code` is a whole statement (as Python's console reads one).
    case complete(id: String, code: String)
    /// Asks, while no execution runs, for the namespace's picklable part (`checkpoint_data`).
    case checkpoint(id: String)
    /// Loads a checkpoint's `data` into the namespace, after clearing the code's names when
    /// `replace` (answered by `restored`).
    case restore(id: String, data: [UInt8], replace: Bool)
    /// Sent once, after `configure`, when the policy lists `[sandbox] preload`: import these
    /// modules now, before any execution (answered by `preloaded`).
    case preload(modules: [String])
    case shutdown
}

/// How a capability call ended, as the code sees it.
public enum CapabilityReply: Sendable, Equatable {
    case value(JSONValue)
    /// `exception` is the Python exception the worker raises: `CapabilityDenied` or one of the
    /// built-in exceptions the worker accepts (docs/protocol.md); `errno` goes with an `OSError`.
    case failure(exception: String, message: String, errno: Int?)
}

// MARK: - Worker messages

extension WorkerMessage {
    public init(_ json: JSONValue) throws(ProtocolError) {
        let message = try MessageMembers(json)
        switch message.type {
        case "ready":
            self = .ready(pid: try message.int("pid"), python: try message.string("python"))
        case "stream" where message.has("data"):
            self = .streamData(id: try message.string("id"), name: try message.enumeration("name"),
                               data: try message.base64("data", instead: "text"))
        case "stream":
            self = .stream(id: try message.string("id"), name: try message.enumeration("name"),
                           text: try message.string("text"))
        case "result":
            self = .result(id: try message.string("id"), data: try message.stringMap("data"))
        case "error":
            self = .error(id: try message.string("id"), ename: try message.string("ename"),
                          evalue: try message.string("evalue"), traceback: try message.strings("traceback"))
        case "input_request":
            self = .inputRequest(id: try message.string("id"), prompt: try message.string("prompt"),
                                 password: try message.bool("password"))
        case "done":
            self = .done(id: try message.string("id"), status: try message.enumeration("status"),
                         duration: try message.double("duration"), exitCode: try message.optionalInt("exit_code"))
        case "cap_call":
            self = .capCall(id: try message.string("id"), capability: try message.string("capability"),
                            method: try message.string("method"), arguments: try message.object("args"))
        case "completeness":
            self = .completeness(id: try message.string("id"), status: try message.enumeration("status"),
                                 blankLineCompletes: try message.bool("blank_line_completes"))
        case "checkpoint_data" where message.has("error"):
            self = .checkpointData(id: try message.string("id"), data: [], names: [], skipped: [:],
                                   error: try message.string("error"))
        case "checkpoint_data":
            self = .checkpointData(id: try message.string("id"), data: try message.base64("data", instead: "error"),
                                   names: try message.strings("names"), skipped: try message.stringMap("skipped"), error: nil)
        case "restored":
            self = .restored(id: try message.string("id"), names: try message.strings("names"),
                             skipped: try message.stringMap("skipped"),
                             error: message.has("error") ? try message.string("error") : nil)
        case "preloaded":
            self = .preloaded(skipped: try message.stringMap("skipped"), duration: try message.double("duration"))
        default:
            throw .unknownType(message.type, direction: "worker")
        }
    }

    /// The wire `type`.
    public var type: String {
        switch self {
        case .ready: "ready"
        case .stream, .streamData: "stream"
        case .result: "result"
        case .error: "error"
        case .inputRequest: "input_request"
        case .done: "done"
        case .capCall: "cap_call"
        case .completeness: "completeness"
        case .checkpointData: "checkpoint_data"
        case .restored: "restored"
        case .preloaded: "preloaded"
        }
    }

    public var json: JSONValue {
        switch self {
        case .ready(let pid, let python):
            ["type": "ready", "pid": .number(Double(pid)), "python": .string(python)]
        case .stream(let id, let name, let text):
            ["type": "stream", "id": .string(id), "name": .string(name.rawValue), "text": .string(text)]
        case .streamData(let id, let name, let data):
            ["type": "stream", "id": .string(id), "name": .string(name.rawValue), "data": .string(Base64.encode(data))]
        case .result(let id, let data):
            // Sorted so the same bundle always encodes to the same bytes.
            ["type": "result", "id": .string(id),
             "data": .object(data.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })]
        case .error(let id, let ename, let evalue, let traceback):
            ["type": "error", "id": .string(id), "ename": .string(ename), "evalue": .string(evalue),
             "traceback": .array(traceback.map(JSONValue.string))]
        case .inputRequest(let id, let prompt, let password):
            ["type": "input_request", "id": .string(id), "prompt": .string(prompt), "password": .bool(password)]
        case .done(let id, let status, let duration, let exitCode):
            .object([("type", "done"), ("id", .string(id)), ("status", .string(status.rawValue)),
                     ("duration", .number(duration))]
                    + (exitCode.map { [("exit_code", .number(Double($0)))] } ?? []))
        case .capCall(let id, let capability, let method, let arguments):
            ["type": "cap_call", "id": .string(id), "capability": .string(capability), "method": .string(method),
             "args": arguments]
        case .completeness(let id, let status, let blankLineCompletes):
            ["type": "completeness", "id": .string(id), "status": .string(status.rawValue),
             "blank_line_completes": .bool(blankLineCompletes)]
        case .checkpointData(let id, _, _, _, let error?):
            ["type": "checkpoint_data", "id": .string(id), "error": .string(error), "names": [], "skipped": [:]]
        case .checkpointData(let id, let data, let names, let skipped, nil):
            ["type": "checkpoint_data", "id": .string(id), "data": .string(Base64.encode(data)),
             "names": .array(names.map(JSONValue.string)), "skipped": Self.sorted(skipped)]
        case .restored(let id, let names, let skipped, let error):
            .object([("type", "restored"), ("id", .string(id)), ("names", .array(names.map(JSONValue.string))),
                     ("skipped", Self.sorted(skipped))] + (error.map { [("error", .string($0))] } ?? []))
        case .preloaded(let skipped, let duration):
            ["type": "preloaded", "skipped": Self.sorted(skipped), "duration": .number(duration)]
        }
    }

    /// A string map as an object with its keys in order, so it always encodes to the same bytes.
    private static func sorted(_ map: [String: String]) -> JSONValue {
        .object(map.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
    }

    /// The message as a frame.
    public var encoded: [UInt8] { FrameEncoder.encode(json) }
}

// MARK: - Supervisor messages

extension SupervisorMessage {
    public init(_ json: JSONValue) throws(ProtocolError) {
        let message = try MessageMembers(json)
        switch message.type {
        case "execute" where message.has("source"):
            self = .executeScript(id: try message.string("id"), source: try message.base64("source", instead: "code"),
                                  filename: try message.string("filename"), argv: try message.strings("argv"))
        case "execute":
            self = .execute(id: try message.string("id"), code: try message.string("code"),
                            filename: try message.string("filename"), argv: try message.strings("argv"),
                            result: try message.bool("result"))
        case "input_reply":
            let id = try message.string("id")
            if try message.optionalBool("eof") == true {
                self = .inputReply(id: id, value: nil)
            } else {
                self = .inputReply(id: id, value: try message.string("value"))
            }
        case "cap_reply":
            let id = try message.string("id")
            if try message.bool("ok") {
                self = .capReply(id: id, reply: .value(message.optional("value") ?? .null))
            } else {
                let error = try MessageMembers(type: "cap_reply error", try message.object("error"))
                self = .capReply(id: id, reply: .failure(exception: try error.string("type"),
                                                         message: try error.string("message"),
                                                         errno: try error.optionalInt("errno")))
            }
        case "configure":
            self = .configure(capabilities: try message.array("capabilities"))
        case "complete":
            self = .complete(id: try message.string("id"), code: try message.string("code"))
        case "checkpoint":
            self = .checkpoint(id: try message.string("id"))
        case "restore":
            self = .restore(id: try message.string("id"), data: try message.base64("data", instead: "code"),
                            replace: try message.bool("replace"))
        case "preload":
            self = .preload(modules: try message.strings("modules"))
        case "shutdown":
            self = .shutdown
        default:
            throw .unknownType(message.type, direction: "supervisor")
        }
    }

    /// The wire `type`.
    public var type: String {
        switch self {
        case .execute, .executeScript: "execute"
        case .inputReply: "input_reply"
        case .capReply: "cap_reply"
        case .configure: "configure"
        case .complete: "complete"
        case .checkpoint: "checkpoint"
        case .restore: "restore"
        case .preload: "preload"
        case .shutdown: "shutdown"
        }
    }

    public var json: JSONValue {
        switch self {
        case .execute(let id, let code, let filename, let argv, let result):
            ["type": "execute", "id": .string(id), "code": .string(code), "filename": .string(filename),
             "argv": .array(argv.map(JSONValue.string)), "result": .bool(result)]
        case .executeScript(let id, let source, let filename, let argv):
            ["type": "execute", "id": .string(id), "source": .string(Base64.encode(source)), "filename": .string(filename),
             "argv": .array(argv.map(JSONValue.string)), "result": false]
        case .inputReply(let id, let value?):
            ["type": "input_reply", "id": .string(id), "value": .string(value)]
        case .inputReply(let id, nil):
            ["type": "input_reply", "id": .string(id), "eof": true]
        case .capReply(let id, .value(let value)):
            ["type": "cap_reply", "id": .string(id), "ok": true, "value": value]
        case .capReply(let id, .failure(let exception, let message, let errno)):
            ["type": "cap_reply", "id": .string(id), "ok": false,
             "error": .object([("type", .string(exception)), ("message", .string(message))]
                              + (errno.map { [("errno", .number(Double($0)))] } ?? []))]
        case .configure(let capabilities):
            ["type": "configure", "capabilities": capabilities]
        case .complete(let id, let code):
            ["type": "complete", "id": .string(id), "code": .string(code)]
        case .checkpoint(let id):
            ["type": "checkpoint", "id": .string(id)]
        case .restore(let id, let data, let replace):
            ["type": "restore", "id": .string(id), "data": .string(Base64.encode(data)), "replace": .bool(replace)]
        case .preload(let modules):
            ["type": "preload", "modules": .array(modules.map(JSONValue.string))]
        case .shutdown:
            ["type": "shutdown"]
        }
    }

    /// The message as a frame.
    public var encoded: [UInt8] { FrameEncoder.encode(json) }
}

// MARK: - Member access with protocol errors

/// Typed reads of one message's members; each failure names the message type and the member.
struct MessageMembers {
    let type: String
    private let message: JSONValue

    init(_ message: JSONValue) throws(ProtocolError) {
        self.type = try messageType(of: message)
        self.message = message
    }

    /// Members of an object nested in a message (`type` names it in errors).
    init(type: String, _ object: JSONValue) {
        self.type = type
        self.message = object
    }

    /// The member as it is, or nil when absent.
    func optional(_ member: String) -> JSONValue? { message[member] }

    func object(_ member: String) throws(ProtocolError) -> JSONValue {
        let value = try required(member)
        guard value.objectValue != nil else { throw mismatch(member, expected: "an object", found: value) }
        return value
    }

    func array(_ member: String) throws(ProtocolError) -> JSONValue {
        let value = try required(member)
        guard value.arrayValue != nil else { throw mismatch(member, expected: "an array", found: value) }
        return value
    }

    private func required(_ member: String) throws(ProtocolError) -> JSONValue {
        guard let value = message[member] else { throw .missingMember(member, type: type) }
        return value
    }

    private func mismatch(_ member: String, expected: String, found: JSONValue) -> ProtocolError {
        .invalidMember(member, type: type, expected: expected, found: found.kindDescription)
    }

    /// Present and not null.
    func has(_ member: String) -> Bool {
        guard let value = message[member] else { return false }
        return !value.isNull
    }

    /// Bytes carried as base64 text in `member`, which replaces the text member `alternative`.
    func base64(_ member: String, instead alternative: String) throws(ProtocolError) -> [UInt8] {
        if has(alternative) {
            throw .invalidMember(member, type: type, expected: "alone", found: "given with \"\(alternative)\"")
        }
        guard let bytes = Base64.decode(try string(member)) else {
            throw .invalidMember(member, type: type, expected: "base64 text", found: "other text")
        }
        return bytes
    }

    func string(_ member: String) throws(ProtocolError) -> String {
        let value = try required(member)
        guard let string = value.stringValue else { throw mismatch(member, expected: "a string", found: value) }
        return string
    }

    func bool(_ member: String) throws(ProtocolError) -> Bool {
        let value = try required(member)
        guard let bool = value.boolValue else { throw mismatch(member, expected: "a boolean", found: value) }
        return bool
    }

    /// Absent and null both read as nil.
    func optionalBool(_ member: String) throws(ProtocolError) -> Bool? {
        guard let value = message[member], !value.isNull else { return nil }
        return try bool(member)
    }

    func double(_ member: String) throws(ProtocolError) -> Double {
        let value = try required(member)
        guard let number = value.doubleValue else { throw mismatch(member, expected: "a number", found: value) }
        return number
    }

    func int(_ member: String) throws(ProtocolError) -> Int {
        let value = try required(member)
        guard let number = value.doubleValue else { throw mismatch(member, expected: "an integer", found: value) }
        guard let int = Int(exactly: number) else {
            throw .invalidMember(member, type: type, expected: "an integer", found: "\(number)")
        }
        return int
    }

    /// Absent and null both read as nil.
    func optionalInt(_ member: String) throws(ProtocolError) -> Int? {
        guard let value = message[member], !value.isNull else { return nil }
        return try int(member)
    }

    func strings(_ member: String) throws(ProtocolError) -> [String] {
        let value = try required(member)
        guard let elements = value.arrayValue else {
            throw mismatch(member, expected: "an array of strings", found: value)
        }
        var strings: [String] = []
        strings.reserveCapacity(elements.count)
        for (position, element) in elements.enumerated() {
            guard let string = element.stringValue else {
                throw .invalidMember(member, type: type, expected: "an array of strings",
                                     found: "an array whose element \(position) is \(element.kindDescription)")
            }
            strings.append(string)
        }
        return strings
    }

    func stringMap(_ member: String) throws(ProtocolError) -> [String: String] {
        let value = try required(member)
        guard let members = value.objectValue else {
            throw mismatch(member, expected: "an object of strings", found: value)
        }
        var map: [String: String] = [:]
        map.reserveCapacity(members.count)
        for (key, element) in members {
            guard let string = element.stringValue else {
                throw .invalidMember(member, type: type, expected: "an object of strings",
                                     found: "an object whose member \"\(key)\" is \(element.kindDescription)")
            }
            map[key] = string
        }
        return map
    }

    func enumeration<Value: RawRepresentable & CaseIterable>(_ member: String) throws(ProtocolError) -> Value
    where Value.RawValue == String {
        let raw = try string(member)
        guard let value = Value(rawValue: raw) else {
            let choices = Value.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            throw .invalidMember(member, type: type, expected: "one of \(choices)", found: "\"\(raw)\"")
        }
        return value
    }
}
