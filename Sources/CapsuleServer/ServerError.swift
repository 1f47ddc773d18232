import CapsuleProtocol
import Hummingbird

/// Why the server could not start.
public enum ServerError: Error, Sendable, CustomStringConvertible {
    case token(String)
    case configuration(String)

    public var description: String {
        switch self {
        case .token(let text), .configuration(let text): text
        }
    }
}

/// An RFC 9457 problem: what a request got wrong (or what the server could not do), as
/// `application/problem+json` with a `detail` that says what to do.
struct Problem: Error {
    let status: HTTPResponse.Status
    let title: String
    let detail: String
    var extra: [(String, JSONValue)] = []

    init(_ status: HTTPResponse.Status, _ title: String, _ detail: String, extra: [(String, JSONValue)] = []) {
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra
    }

    var response: Response {
        let body = JSONValue.object([("type", "about:blank"), ("title", .string(title)), ("status", .number(Double(status.code))),
                                     ("detail", .string(detail))] + extra)
        var headers = HTTPFields()
        headers[.contentType] = "application/problem+json"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"capsule\"" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.serialized() + [10])))
    }

    static func notFound(session id: String) -> Problem {
        Problem(.notFound, "No such session", "no session \(id) is open here; GET /v1/sessions lists those that are")
    }
}
