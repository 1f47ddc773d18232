import CapsuleProtocol
import CapsuleRuntime

/// What an execution produced, as the server sends it: one JSON object an event, the same in a
/// JSON response's `events`, an NDJSON line and a Server-Sent Event's data (docs/server.md).
extension SessionEvent {
    var json: JSONValue {
        switch self {
        case .stream(let name, let text):
            .object([("type", "stream"), ("name", .string(name.rawValue)), ("text", .string(text))])
        case .streamData(let name, let bytes):
            .object([("type", "stream"), ("name", .string(name.rawValue)), ("text", .string(String(decoding: bytes, as: UTF8.self)))])
        case .result(let bundle):
            .object([("type", "result"), ("data", Self.bundle(bundle))])
        case .display(let bundle):
            .object([("type", "display"), ("data", Self.bundle(bundle))])
        case .error(let name, let value, let traceback):
            .object([("type", "error"), ("ename", .string(name)), ("evalue", .string(value)),
                     ("traceback", .array(traceback.map(JSONValue.string)))])
        case .inputRequest(let prompt, let password):
            .object([("type", "input_request"), ("prompt", .string(prompt)), ("password", .bool(password))])
        case .inputRefused:
            .object([("type", "input_refused")])
        case .approvalRequest(let id, let request):
            .object([("type", "approval_request"), ("id", .string(id)), ("capability", .string(request.capability)),
                     ("method", .string(request.method)), ("summary", request.summary)])
        }
    }

    static func bundle(_ bundle: [String: String]) -> JSONValue {
        .object(bundle.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
    }
}

extension ExecutionOutcome {
    /// The last event of an execution: how it ended, and whether the session is still usable.
    func doneJSON(alive: Bool) -> JSONValue {
        var members: [(String, JSONValue)] = [("type", "done")] + auditFields
        if case .finished(_, _, let duration, _) = self { members.append(("duration", .number(duration))) }
        members.append(("session_alive", .bool(alive)))
        return .object(members)
    }
}
