import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// `net`: HTTP(S) to the URLs the policy lists. The supervisor checks the URL and method; the
/// request itself runs in `capsule-net`, a helper process beside capsule (it holds the HTTP and
/// TLS stack, which the supervisor never links), which resolves the name itself, refuses special
/// addresses, connects to the address it checked and checks every redirect the same way.
public struct NetCapability: Capability {
    public let name = "net"
    public let summary = "HTTP(S) requests to the URLs the policy lists ([capabilities.net] urls and methods)."
    public let methods = [
        Method("fetch", level: .standard, parameters: [
            Parameter("url", .string), Parameter("method", .string, default: "GET"), Parameter("headers", .object, default: [:], audit: .headers),
            Parameter("body", .any, default: .null), Parameter("timeout", .number, default: .null),
        ], doc: "One HTTP request; returns a Response with .status, .headers, .content, .text and .json()."),
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
        let text = arguments.string("url")
        guard let url = RequestURL(text) else {
            throw .value("net.fetch: '\(text)' is not an http:// or https:// URL (user names and passwords are not allowed)")
        }
        let verb = arguments.string("method").uppercased()
        if let problem = NetCapability.check(url, method: verb, urls: policy.urls, methods: policy.methods) { throw problem }
        if let body = arguments["body"], !body.isNull, body.stringValue == nil, body.bytesValue == nil {
            throw .type("net.fetch(): 'body' must be str or bytes")
        }
        var timeout = policy.timeoutSeconds ?? 30
        if let asked = arguments.double("timeout") { timeout = min(timeout, max(0.001, asked)) }
        let limit = min(context.maxBytes ?? Int.max, 12 << 20) // an answer must fit one frame (base64)
        let credentials = try resolvedCredentials(needed: url.host)
        let params: JSONValue = [
            "method": "fetch",
            "args": .object(arguments.values.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }),
            "max_bytes": .number(Double(limit)),
            "timeout": .number(timeout),
            "policy": ["urls": .array(policy.urls.map(JSONValue.string)), "methods": .array(policy.methods.map(JSONValue.string)),
                       "credentials": .object(credentials)],
        ]
        return try await process.request("call", params: params).get()
    }

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
        guard NetAllowList.entry(allowing: url.prefixForm, in: urls) != nil else {
            let listed = urls.isEmpty ? "it lists none" : urls.joined(separator: ", ")
            return .denied("'\(url.text)' is not within the urls of [capabilities.net] (\(listed))")
        }
        return nil
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
