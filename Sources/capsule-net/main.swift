// capsule-net: the helper process that performs the `net` capability's requests for the
// supervisor (Sources/CapsuleCapabilities/Net.swift). It speaks the plugin protocol on stdin and
// stdout (JSON-RPC 2.0, one message a line) and is the only part of capsule that links an HTTP
// and TLS stack (WebSockets: WebSocket.swift). Every hop of a request is checked against the policy the supervisor sends with
// the call; the name is resolved here, every address it resolves to is checked, and the
// connection goes to the checked address (no second lookup that DNS rebinding could answer).
#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import CapsuleCapabilities
import CapsuleHelper
import CapsuleProtocol
import NIOCore
import NIOHTTP1

typealias Failure = HelperFailure

/// The addresses a name resolves to (numeric text), or why not.
func resolve(_ host: String) -> Result<[String], Failure> {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host, nil, &hints, &list)
    guard status == 0, let first = list else {
        return .failure(.connection("cannot resolve '\(host)': \(String(cString: gai_strerror(status)))"))
    }
    defer { freeaddrinfo(first) }
    var addresses: [String] = []
    var entry: UnsafeMutablePointer<addrinfo>? = first
    while let current = entry {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        if current.pointee.ai_family == AF_INET {
            current.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                var raw = address.pointee.sin_addr
                _ = inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
            }
        } else if current.pointee.ai_family == AF_INET6 {
            current.pointee.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                var raw = address.pointee.sin6_addr
                _ = inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
            }
        }
        let address = String(cString: text)
        if !address.isEmpty && !addresses.contains(address) { addresses.append(address) }
        entry = current.pointee.ai_next
    }
    return addresses.isEmpty ? .failure(.connection("'\(host)' has no address")) : .success(addresses)
}

/// The checked address to connect to for a hop.
func address(for url: RequestURL) -> Result<String, Failure> {
    let host = url.bareHost
    let literal = AddressRules.ipv4(host) != nil || AddressRules.ipv6(host) != nil
    let addresses: [String]
    if literal { addresses = [host] } else {
        switch resolve(host) {
        case .success(let found): addresses = found
        case .failure(let failure): return .failure(failure)
        }
    }
    // Every address must pass: a name that also resolves somewhere special is refused whole.
    for candidate in addresses {
        if let problem = NetCapability.addressProblem(candidate, for: url) { return .failure(.denied(problem)) }
    }
    return .success(addresses[0])
}

let redirects: Set<UInt> = [301, 302, 303, 307, 308]
/// Headers that belong to one host: not sent on to another on a redirect.
let hostBound: Set<String> = ["authorization", "cookie", "proxy-authorization"]

func fetch(_ params: JSONValue) async -> Result<JSONValue, Failure> {
    let args = params["args"] ?? [:]
    let policy = params["policy"] ?? [:]
    let urls = policy["urls"]?.arrayValue?.compactMap(\.stringValue) ?? []
    let methods = policy["methods"]?.arrayValue?.compactMap(\.stringValue) ?? []
    let credentials = policy["credentials"]?.objectValue ?? []
    let maxBytes = params["max_bytes"]?.intValue ?? (12 << 20)
    let timeout = params["timeout"]?.doubleValue ?? 30
    let deadline = NIODeadline.now() + .nanoseconds(Int64(timeout * 1e9))

    guard var url = RequestURL(args["url"]?.stringValue ?? "") else { return .failure(.value("not a URL")) }
    var method = (args["method"]?.stringValue ?? "GET").uppercased()
    var body: [UInt8]? = args["body"].flatMap { $0.bytesValue ?? $0.stringValue.map { Array($0.utf8) } }
    var headers: [(String, String)] = (args["headers"]?.objectValue ?? []).compactMap { name, value in
        guard let text = value.stringValue else { return nil }
        return name.lowercased() == "host" ? nil : (name, text)
    }
    for hop in 0...10 {
        if let problem = NetCapability.check(url, method: method, urls: urls, methods: methods) {
            return .failure(Failure(exception: problem.exception, hop == 0 ? problem.message : "a redirect was refused: \(problem.message)"))
        }
        let target: String
        switch address(for: url) {
        case .success(let found): target = found
        case .failure(let failure): return .failure(failure)
        }
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.dnsOverride = AddressRules.ipv4(url.bareHost) == nil && AddressRules.ipv6(url.bareHost) == nil ? [url.bareHost: target] : [:]
        configuration.timeout = .init(connect: .seconds(10), read: .nanoseconds(Int64(timeout * 1e9)))
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        var request = HTTPClientRequest(url: url.text)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        // A credential the policy attaches for this host; never for another.
        if let secret = credentials.first(where: { $0.0 == url.host })?.1,
           let header = secret["header"]?.stringValue, let value = secret["value"]?.stringValue {
            request.headers.replaceOrAdd(name: header, value: value)
        }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let outcome = await send(request, on: client, url: url, deadline: deadline, timeout: timeout, maxBytes: maxBytes)
        try? await client.shutdown()
        switch outcome {
        case .done(let result):
            return result
        case .redirect(let status, let location):
            guard let next = url.resolving(location) else {
                return .failure(.denied("a redirect to '\(location)' was refused: it is not an http:// or https:// URL"))
            }
            if status == 303 || (method == "POST" && [301, 302].contains(status)) {
                method = "GET"
                body = nil
            }
            if next.host != url.host { headers.removeAll { hostBound.contains($0.0.lowercased()) } }
            url = next
        }
    }
    return .failure(.denied("more than 10 redirects"))
}

enum HopOutcome {
    case done(Result<JSONValue, Failure>)
    case redirect(status: UInt, location: String)
}

/// One request on one connection target: its answer, or where it redirects.
func send(_ request: HTTPClientRequest, on client: HTTPClient, url: RequestURL, deadline: NIODeadline,
          timeout: Double, maxBytes: Int) async -> HopOutcome {
    let response: HTTPClientResponse
    do {
        let left = deadline - .now()
        guard left > .zero else { return .done(.failure(Failure(exception: "TimeoutError", "the request took longer than \(timeout) s"))) }
        response = try await client.execute(request, timeout: .nanoseconds(left.nanoseconds))
    } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
        return .done(.failure(Failure(exception: "TimeoutError", "the request to '\(url.text)' took longer than \(timeout) s")))
    } catch {
        return .done(.failure(.connection("the request to '\(url.text)' failed: \(error)")))
    }
    if redirects.contains(response.status.code), let location = response.headers.first(name: "location") {
        return .redirect(status: response.status.code, location: location)
    }
    let bytes: ByteBuffer
    do { bytes = try await response.body.collect(upTo: maxBytes) } catch is NIOTooManyBytesError {
        return .done(.failure(.denied("the response from '\(url.text)' is larger than the \(maxBytes) bytes a call may return (max_bytes in [capabilities.net])")))
    } catch {
        return .done(.failure(.connection("reading the response from '\(url.text)' failed: \(error)")))
    }
    return .done(.success([
        "status": .number(Double(response.status.code)),
        "reason": .string(response.status.reasonPhrase),
        "headers": .array(response.headers.map { .array([.string($0.name), .string($0.value)]) }),
        "body": .bytes(Array(bytes.readableBytesView)),
        "url": .string(url.text),
    ]))
}

Helper.serve(summary: "HTTP(S) and WebSockets for capsule's net capability.") { params in
    params["method"]?.stringValue == "fetch" ? await fetch(params) : await webSocketCall(params)
}
