import CapsulePolicy

/// A request URL taken apart: `scheme://host[:port]/path[?query]` (a fragment is dropped; user
/// names and passwords are refused). The scheme is http, https, or (for net.websocket) ws, wss.
public struct RequestURL: Sendable, Equatable {
    public let scheme: String
    /// Lowercased; an IPv6 address keeps its brackets.
    public let host: String
    public let port: Int
    public let path: String
    public let query: String?

    public init?(_ text: String) {
        let lower = text.lowercased()
        guard let scheme = ["https", "http", "wss", "ws"].first(where: { lower.hasPrefix($0 + "://") }) else { return nil }
        var rest = Substring(text.dropFirst(scheme.count + 3))
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        guard !authority.isEmpty, !authority.contains("@"), !text.contains(where: { $0 == " " || $0 == "\\" || $0.isNewline }) else { return nil }
        var host = Substring(authority)
        var port = Self.defaultPort(scheme)
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number),
                  authority[authority.index(after: colon)...].allSatisfy(\.isNumber) else { return nil }
            port = number
            host = authority[..<colon]
        }
        guard !host.isEmpty else { return nil }
        var pathAndQuery = rest.dropFirst(authority.count)
        var query: String?
        if let mark = pathAndQuery.firstIndex(of: "?") {
            query = String(pathAndQuery[pathAndQuery.index(after: mark)...])
            pathAndQuery = pathAndQuery[..<mark]
        }
        self.scheme = scheme
        self.host = host.lowercased()
        self.port = port
        self.path = pathAndQuery.isEmpty ? "/" : String(pathAndQuery)
        self.query = query
    }

    public static func defaultPort(_ scheme: String) -> Int { scheme == "https" || scheme == "wss" ? 443 : 80 }

    public var isWebSocket: Bool { scheme == "ws" || scheme == "wss" }
    /// Whether the connection is TLS (https, wss).
    public var isSecure: Bool { scheme == "https" || scheme == "wss" }

    /// What the allow-list compares: no query.
    public var prefixForm: String { "\(scheme)://\(host):\(port)\(path)" }
    /// The forms a `urls` entry may allow: a ws:// URL is also allowed by the entry for the same
    /// http:// URL (wss:// by https://), the URL its handshake request goes to.
    public var allowListForms: [String] {
        guard isWebSocket else { return [prefixForm] }
        return [prefixForm, "\(isSecure ? "https" : "http")://\(host):\(port)\(path)"]
    }
    public var text: String { "\(scheme)://\(host)\(port == Self.defaultPort(scheme) ? "" : ":\(port)")\(path)\(query.map { "?\($0)" } ?? "")" }
    /// The request target of the request line: path and query.
    public var target: String { path + (query.map { "?\($0)" } ?? "") }
    /// The host without IPv6 brackets, as a resolver or a socket address wants it.
    public var bareHost: String { host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host }

    /// `location` (a redirect's Location header) resolved against this URL.
    public func resolving(_ location: String) -> RequestURL? {
        let lower = location.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") { return RequestURL(location) }
        if location.hasPrefix("//") { return RequestURL("\(scheme):\(location)") }
        let origin = "\(scheme)://\(host):\(port)"
        if location.hasPrefix("/") { return RequestURL(origin + location) }
        if location.hasPrefix("?") { return RequestURL(origin + path + location) }
        let directory = path.hasSuffix("/") ? path : String(path[...(path.lastIndex(of: "/") ?? path.startIndex)])
        return RequestURL(origin + directory + location)
    }
}

/// IP addresses the broker will not connect to unless the policy names them exactly: loopback,
/// private, link-local, shared (CGNAT), cloud metadata and other special-purpose ranges.
public enum AddressRules {
    /// Names that point at cloud metadata services.
    static let metadataNames: Set<String> = ["metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                                             "instance-data.ec2.internal", "metadata.azure.internal"]

    /// Why an address is special, or nil for an ordinary public address.
    public static func specialUse(_ address: String) -> String? {
        if let v4 = ipv4(address) { return specialUse(v4: v4) }
        if let v6 = ipv6(address) { return specialUse(v6: v6) }
        return "not an IP address"
    }

    public static func isMetadataName(_ host: String) -> Bool {
        metadataNames.contains(host.lowercased().trimmingSuffixDot)
    }

    static func specialUse(v4 a: [UInt8]) -> String? {
        switch (a[0], a[1]) {
        case (0, _): return "a 'this network' address (0.0.0.0/8)"
        case (10, _): return "a private address (10.0.0.0/8)"
        case (100, 64...127): return "a shared (CGNAT) address (100.64.0.0/10)"
        case (127, _): return "a loopback address (127.0.0.0/8)"
        case (169, 254): return a[2] == 169 && a[3] == 254 ? "the cloud metadata address (169.254.169.254)" : "a link-local address (169.254.0.0/16)"
        case (172, 16...31): return "a private address (172.16.0.0/12)"
        case (192, 0) where a[2] == 0 || a[2] == 2: return "a special-purpose address (192.0.0.0/24, 192.0.2.0/24)"
        case (192, 168): return "a private address (192.168.0.0/16)"
        case (198, 18...19): return "a benchmarking address (198.18.0.0/15)"
        case (198, 51) where a[2] == 100, (203, 0) where a[2] == 113: return "a documentation address"
        case (224...239, _): return "a multicast address"
        case (240...255, _): return "a reserved or broadcast address (240.0.0.0/4)"
        default: return nil
        }
    }

    static func specialUse(v6 a: [UInt8]) -> String? {
        let zeros = a[0..<10].allSatisfy { $0 == 0 }
        if a.allSatisfy({ $0 == 0 }) { return "the unspecified address (::)" }
        if a[0..<15].allSatisfy({ $0 == 0 }) && a[15] == 1 { return "the loopback address (::1)" }
        if zeros && a[10] == 0xff && a[11] == 0xff { return "an IPv4-mapped address (::ffff:0:0/96), which would reach \(a[12]).\(a[13]).\(a[14]).\(a[15])" }
        if zeros && a[10] == 0 && a[11] == 0 { return "an IPv4-compatible address (::/96)" }
        if a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b { return "a NAT64 address (64:ff9b::/96)" }
        if a[0] == 0xfd && a[1] == 0x00 && a[2] == 0x0e && a[3] == 0xc2 { return "the cloud metadata address (fd00:ec2::254)" }
        if a[0] & 0xfe == 0xfc { return "a unique local address (fc00::/7)" }
        if a[0] == 0xfe && a[1] & 0xc0 == 0x80 { return "a link-local address (fe80::/10)" }
        if a[0] == 0xfe && a[1] & 0xc0 == 0xc0 { return "a site-local address (fec0::/10)" }
        if a[0] == 0xff { return "a multicast address (ff00::/8)" }
        if a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8 { return "a documentation address (2001:db8::/32)" }
        if a[0] == 0x20 && a[1] == 0x02 { return "a 6to4 address (2002::/16), which can reach IPv4 space" }
        if a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x00 && a[3] == 0x00 { return "a Teredo address (2001::/32)" }
        return nil
    }

    /// Dotted-quad IPv4, four decimal parts (no octal, hex or short forms: a resolver reads those
    /// differently from a person).
    public static func ipv4(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(part.count > 1 && part.hasPrefix("0")), let value = UInt8(part) else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    /// IPv6 text (with `::` and an embedded IPv4 tail), without brackets or a zone.
    public static func ipv6(_ text: String) -> [UInt8]? {
        guard text.contains(":"), !text.contains("%") else { return nil }
        let halves = text.components(separatedByDoubleColon: ())
        guard halves.count <= 2 else { return nil }
        func groups(_ part: Substring) -> [UInt8]? {
            if part.isEmpty { return [] }
            var out: [UInt8] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if index == pieces.count - 1, piece.contains("."), let v4 = ipv4(String(piece)) { out += v4; continue }
                guard (1...4).contains(piece.count), let value = UInt16(piece, radix: 16) else { return nil }
                out += [UInt8(value >> 8), UInt8(value & 0xff)]
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        if halves.count == 1 { return head.count == 16 ? head : nil }
        guard let tail = groups(halves[1]), head.count + tail.count < 16 else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
    }
}

extension String {
    var trimmingSuffixDot: String { hasSuffix(".") ? String(dropLast()) : self }

    /// The text split at the first `::` (one part when there is none).
    func components(separatedByDoubleColon: ()) -> [Substring] {
        var parts: [Substring] = []
        var rest = Substring(self)
        while let range = rest.firstRange(of: "::") {
            parts.append(rest[..<range.lowerBound])
            rest = rest[range.upperBound...]
        }
        parts.append(rest)
        return parts
    }
}
