import CapsuleProtocol
import CapsuleRuntime
import Hummingbird
import NIOCore

/// How a streamed execution's events are framed: NDJSON (a JSON object a line) or Server-Sent
/// Events (`data: {...}`, an event each). Asked for with `Accept` or `?stream=ndjson|sse`; nil
/// for one JSON response when the execution has ended.
enum EventFraming {
    case ndjson, sse

    init?(_ request: Request) {
        let asked = request.uri.queryParameters["stream"].map(String.init)
        let accept = request.headers[.accept] ?? ""
        if asked == "sse" || (asked == nil && accept.contains("text/event-stream")) {
            self = .sse
        } else if asked == "ndjson" || (asked == nil && accept.contains("application/x-ndjson")) {
            self = .ndjson
        } else {
            return nil
        }
    }

    var contentType: String { self == .sse ? "text/event-stream" : "application/x-ndjson" }

    func frame(_ value: JSONValue) -> ByteBuffer {
        let line = value.serialized()
        return ByteBuffer(bytes: self == .sse ? Array("event: \(value["type"]?.stringValue ?? "message")\ndata: ".utf8) + line + [10, 10] : line + [10])
    }
}

extension Server {
    /// One JSON object once the execution has ended: its output joined, its result, displays and
    /// error, every event in order, and how it ended. Nobody can answer while the response is
    /// not yet sent, so `input()` reads end of file and `ask` rules are refused (stream the
    /// events to answer them).
    static func collected(_ execution: Execution, _ session: Session) async -> JSONValue {
        var stdout = "", stderr = "", events: [JSONValue] = [], displays: [JSONValue] = []
        var result = JSONValue.null, error = JSONValue.null
        let outcome = await execution.outcome { event in
            events.append(event.json)
            switch event {
            case .stream(.stdout, let text): stdout += text
            case .stream(.stderr, let text): stderr += text
            case .streamData(.stdout, let bytes): stdout += String(decoding: bytes, as: UTF8.self)
            case .streamData(.stderr, let bytes): stderr += String(decoding: bytes, as: UTF8.self)
            case .result(let bundle): result = SessionEvent.bundle(bundle)
            case .display(let bundle): displays.append(SessionEvent.bundle(bundle))
            case .error: error = event.json
            case .inputRequest: session.answerInput(nil)
            case .approvalRequest(let id, _):
                _ = session.answerApproval(id, .denied("nobody can answer an approval during a plain JSON request; ask for streamed events (Accept: application/x-ndjson) to answer it"))
            case .inputRefused: break
            }
        }
        return .object([("stdout", .string(stdout)), ("stderr", .string(stderr)), ("result", result), ("displays", .array(displays)),
                        ("error", error), ("events", .array(events)), ("done", outcome.doneJSON(alive: session.seemsAlive))])
    }

    /// The events as they come, each written at once, ending with `done`. An `input_request`
    /// waits for POST .../input, an `approval_request` for POST .../approvals/ID. A client that
    /// goes away interrupts the execution.
    static func streamed(_ execution: Execution, _ session: Session, _ framing: EventFraming,
                         ended: @escaping @Sendable () -> Void) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = framing.contentType
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { ended() }
            for await item in execution {
                let value: JSONValue
                switch item {
                case .event(let event): value = event.json
                case .done(let outcome): value = outcome.doneJSON(alive: session.seemsAlive)
                }
                do { try await writer.write(framing.frame(value)) } catch {
                    session.interrupt()
                    for await _ in execution {} // the rest, unread, so the session is free again
                    throw error
                }
            }
            try await writer.finish(nil)
        })
    }
}
