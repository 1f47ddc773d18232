import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// `net`: HTTP(S) to the URLs the policy lists. The supervisor checks the URL and method; the
/// request itself runs in `capsule-net`, a helper process beside capsule (it holds the HTTP and
/// TLS stack, which the supervisor never links), which resolves the name itself, refuses special
/// addresses, connects to the address it checked and checks every redirect the same way.
public struct NetCapability: Capability {
    public let name = "net"
    public let summary = "HTTP(S) requests and WebSockets to the URLs the policy lists ([capabilities.net] urls, methods, websocket)."
    public let methods = [
        Method("fetch", level: .standard, parameters: [
            Parameter("url", .string), Parameter("method", .string, default: "GET"), Parameter("headers", .object, default: [:], audit: .headers),
            Parameter("body", .any, default: .null), Parameter("timeout", .number, default: .null),
        ], doc: "One HTTP request; returns a Response with .status, .headers, .content, .text and .json()."),
        Method("websocket", level: .trusted, parameters: [
            Parameter("url", .string), Parameter("headers", .object, default: [:]), Parameter("timeout", .number, default: .null),
        ], doc: "Open a WebSocket (ws:// or wss://) to a URL the policy lists; returns a WebSocket with send(), recv() and close()."),
        // The WebSocket object's calls: each one passes the broker (validation, limits, audit).
        Method("ws_send", level: .trusted, parameters: [Parameter("socket", .string), Parameter("data", .text)],
               doc: "Send one message on an open WebSocket (str: a text message, bytes: a binary one). Use WebSocket.send()."),
        // Waiting for messages is not what rate_per_minute limits: the open and the sends are.
        Method("ws_recv", level: .trusted, parameters: [Parameter("socket", .string), Parameter("timeout", .number, default: .null)],
               counted: false, doc: "The next message of an open WebSocket. Use WebSocket.recv()."),
        Method("ws_close", level: .trusted, parameters: [
            Parameter("socket", .string), Parameter("code", .integer, default: 1000), Parameter("reason", .string, default: ""),
        ], counted: false, doc: "Close an open WebSocket. Use WebSocket.close()."),
    ]
    let policy: CapsulePolicy.NetCapability
    private let process: PluginProcess

    /// `helper`: the capsule-net program (by default beside the running executable).
    public init(_ policy: CapsulePolicy.NetCapability, helper: String? = nil) {
        self.policy = policy
        let program = helper ?? PluginProcess.helperPath(named: "capsule-net")
        // The helper's own timeout comes first; this one only catches a helper that hangs.
        process = PluginProcess(name: "net", command: [program], callSeconds: (policy.timeoutSeconds ?? 30) + 5)
    }

    public func invoke(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue {
        if method.name != "fetch" { return try await webSocket(method, arguments, context: context) }
        let text = arguments.string("url")
        guard let url = RequestURL(text), !url.isWebSocket else {
            throw .value("net.fetch: '\(text)' is not an http:// or https:// URL (user names and passwords are not allowed)")
        }
        let verb = arguments.string("method").uppercased()
        if let problem = NetCapability.check(url, method: verb, urls: policy.urls, methods: policy.methods) { throw problem }
        if let body = arguments["body"], !body.isNull, body.stringValue == nil, body.bytesValue == nil {
            throw .type("net.fetch(): 'body' must be str or bytes")
        }
        var timeout = policy.timeoutSeconds ?? 30
        if let asked = arguments.double("timeout") { timeout = min(timeout, max(0.001, asked)) }
        return try await process.request("call", params: try helperParams("fetch", arguments, host: url.host, timeout: timeout,
                                                                          context: context)).get()
    }

    /// What capsule-net gets for a call: the arguments, the limits and the policy's rules, with
    /// the credentials' values (read here) when `host` is given.
    func helperParams(_ method: String, _ arguments: Arguments, host: String?, timeout: Double,
                      context: CallContext) throws(CapabilityError) -> JSONValue {
        let limit = min(context.maxBytes ?? Int.max, 12 << 20) // an answer must fit one frame (base64)
        var credentials: [(String, JSONValue)] = []
        if let host { credentials = try resolvedCredentials(needed: host) }
        return [
            "method": .string(method),
            "args": .object(arguments.values.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }),
            "max_bytes": .number(Double(limit)),
            "timeout": .number(timeout),
            "policy": ["urls": .array(policy.urls.map(JSONValue.string)), "methods": .array(policy.methods.map(JSONValue.string)),
                       "credentials": .object(credentials)],
        ]
    }

    /// net.websocket and the WebSocket's calls. The connection lives in capsule-net (one process
    /// per session, so a handle names a connection of this session only); the session's end stops it.
    func webSocket(_ method: Method, _ arguments: Arguments, context: CallContext) async throws(CapabilityError) -> JSONValue {
        guard policy.websocket else {
            throw .denied("net.\(method.name) needs `websocket = true` in [capabilities.net] (capabilities.net.websocket, level trusted); "
                + "this policy (\(context.policy.origin), level \(context.policy.level.rawValue)) does not set it")
        }
        let handshake = policy.timeoutSeconds ?? 30
        switch method.name {
        case "websocket":
            let text = arguments.string("url")
            guard let url = RequestURL(text), url.isWebSocket else {
                throw .value("net.websocket: '\(text)' is not a ws:// or wss:// URL (user names and passwords are not allowed)")
            }
            if let problem = NetCapability.allowListProblem(url, urls: policy.urls) { throw problem }
            var timeout = handshake
            if let asked = arguments.double("timeout") { timeout = min(timeout, max(0.001, asked)) }
            let params = try helperParams("ws_open", arguments, host: url.host, timeout: timeout, context: context)
            return try await process.request("call", params: params, seconds: timeout + 5).get()
        case "ws_recv":
            // A recv may wait as long as the code asks (None: until a message, the close or the session's end).
            let wait = arguments.double("timeout").map { max(0, $0) }
            let params = try helperParams("ws_recv", arguments, host: nil, timeout: wait ?? -1, context: context)
            return try await process.request("call", params: params, seconds: wait.map { $0 + 5 } ?? .infinity).get()
        case "ws_close":
            let code = arguments.int("code")
            guard code == 1000 || (3000...4999).contains(code) else {
                throw .value("WebSocket.close(): code \(code) is not 1000 or an application code from 3000 to 4999")
            }
            guard arguments.string("reason").utf8.count <= 123 else { throw .value("WebSocket.close(): the reason is longer than 123 bytes of UTF-8") }
            fallthrough
        default:
            let params = try helperParams(method.name, arguments, host: nil, timeout: handshake, context: context)
            return try await process.request("call", params: params, seconds: handshake + 5).get()
        }
    }

    /// The session ended: its WebSockets close with the helper that holds them.
    public func sessionEnded() { process.stop() }

    /// The credentials' values, read now (from capsule's environment or a file), for the helper
    /// only: they never reach the sandbox. One the first host needs and cannot be read is an error.
    func resolvedCredentials(needed host: String) throws(CapabilityError) -> [(String, JSONValue)] {
        var resolved: [(String, JSONValue)] = []
        for (name, credential) in policy.credentials.sorted(by: { $0.key < $1.key }) {
            let value: String?
            switch credential.source {
            case .environment(let variable): value = OS.environment(variable)
            case .file(let path):
                value = (try? OS.readFile(path, limit: 1 << 16)).map { String(decoding: $0, as: UTF8.self).trimmingLineEnd }
            }
            guard let value, !value.isEmpty else {
                if name == host {
                    let source = switch credential.source {
                    case .environment(let variable): "\(variable) is not set in capsule's environment"
                    case .file(let path): "\(path) cannot be read"
                    }
                    throw .runtime("the credential [capabilities.net] attaches for \(host) is not available: \(source)")
                }
                continue
            }
            resolved.append((name, ["header": .string(credential.header), "value": .string(value)]))
        }
        return resolved
    }

    /// Why a request (or a redirect hop) is not allowed, or nil.
    public static func check(_ url: RequestURL, method: String, urls: [String], methods: [String]) -> CapabilityError? {
        guard methods.contains(method) else {
            return .denied("\(method) is not one of the methods [capabilities.net] allows (\(methods.joined(separator: ", ")))")
        }
        return allowListProblem(url, urls: urls)
    }

    /// Why `url` is not within `urls`, or nil. A ws:// URL is allowed by its ws:// or its http://
    /// form, wss:// by wss:// or https:// (`allowListForms`); a ws(s) entry never allows http(s).
    public static func allowListProblem(_ url: RequestURL, urls: [String]) -> CapabilityError? {
        guard !url.allowListForms.contains(where: { NetAllowList.entry(allowing: $0, in: urls) != nil }) else { return nil }
        let listed = urls.isEmpty ? "it lists none" : urls.joined(separator: ", ")
        return .denied("'\(url.text)' is not within the urls of [capabilities.net] (\(listed))")
    }

    /// Why the helper must not connect to `address` for `url`, or nil: a special address is
    /// reached only through a URL whose host is that very address, listed in urls.
    public static func addressProblem(_ address: String, for url: RequestURL) -> String? {
        guard let why = AddressRules.specialUse(address) else { return nil }
        if AddressRules.ipv4(url.bareHost) == AddressRules.ipv4(address) && AddressRules.ipv4(address) != nil { return nil }
        if let literal = AddressRules.ipv6(url.bareHost), literal == AddressRules.ipv6(address) { return nil }
        let named = url.bareHost == address ? "'\(url.host)' is \(why)" : "'\(url.host)' resolves to \(address), \(why)"
        return named + "; only a URL that names the address itself in [capabilities.net] urls may reach it"
    }
}

extension String {
    var trimmingLineEnd: String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == "\r" { text.removeLast() }
        return String(text)
    }
}
