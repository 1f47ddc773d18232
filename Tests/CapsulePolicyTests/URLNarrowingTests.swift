import Testing
@testable import CapsulePolicy

/// `capabilities.net.urls` under `extends`: a child may only list URLs within one its base lists —
/// same scheme, host and port, and a path that continues the base's past a segment boundary. These
/// were all accepted when the check was `url.hasPrefix(baseURL)` on the raw strings.
@Suite(.serialized) struct URLNarrowingTests {
    /// The error loading a child that lists `childURLs` and extends a `standard` base listing `baseURLs`
    /// (nil when it loads), with the temporary directory's path written as `DIR`.
    private func narrowingError(base baseURLs: [String], child childURLs: [String], _ name: String) -> String? {
        withTemporaryDirectory("url-narrowing-\(name)") { dir in
            func list(_ urls: [String]) -> String { "[" + urls.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
            dir.write("base.toml", "level = \"standard\"\n[capabilities.net]\nurls = \(list(baseURLs))\n")
            let child = dir.write("child.toml", "extends = \"base.toml\"\n[capabilities.net]\nurls = \(list(childURLs))\n")
            return loadError(child)?.description.replacing(dir.path, with: "DIR")
        }
    }

    private func notWithin(_ url: String, base: String) -> String {
        "DIR/child.toml:3: `capabilities.net.urls`: `\(url)` does not start with a URL it allows; "
            + "a policy that extends `DIR/base.toml` may only narrow it"
    }

    // MARK: The bypasses

    @Test func aLongerHostIsNotWithinTheBase() {
        #expect(narrowingError(base: ["https://api.example.com"], child: ["https://api.example.com.attacker.net/"], "host")
            == notWithin("https://api.example.com.attacker.net/", base: "https://api.example.com"))
    }

    @Test func anotherPortIsNotWithinTheBase() {
        #expect(narrowingError(base: ["https://api.example.com"], child: ["https://api.example.com:8443/admin"], "port")
            == notWithin("https://api.example.com:8443/admin", base: "https://api.example.com"))
    }

    @Test func dotDotInTheChildIsRejected() {
        #expect(narrowingError(base: ["https://api.example.com/v1/"], child: ["https://api.example.com/v1/../admin"], "dotdot")
            == "DIR/child.toml:3: `capabilities.net.urls`: `https://api.example.com/v1/../admin` must not have a `.` or `..` path segment")
    }

    @Test func percentEncodedDotsInTheChildAreRejected() {
        #expect(narrowingError(base: ["https://api.example.com/v1/"], child: ["https://api.example.com/v1/%2e%2e/admin"], "pct")
            == "DIR/child.toml:3: `capabilities.net.urls`: `https://api.example.com/v1/%2e%2e/admin` must not percent-encode `.` or `/` in its path (%2e, %2f)")
    }

    @Test func otherWaysOutOfTheBaseAreNotWithinIt() {
        for (url, name) in [("http://api.example.com/v1/x", "scheme"), ("https://api.example.com:80/v1/x", "port80"),
                            ("https://example.com/v1/x", "shorter-host"), ("https://api.example.com/v2/", "path"),
                            ("https://api.example.com/", "parent"), ("https://api.example.com/v1", "no-slash")] {
            #expect(narrowingError(base: ["https://api.example.com/v1/"], child: [url], "other-\(name)")
                == notWithin(url, base: "https://api.example.com/v1/"))
        }
    }

    // MARK: Narrowing that is still allowed

    @Test func aLongerPathNarrows() {
        #expect(narrowingError(base: ["https://api.example.com/v1/"], child: ["https://api.example.com/v1/items"], "items") == nil)
    }

    @Test func theHostComparesWithoutCase() {
        #expect(narrowingError(base: ["https://api.example.com/v1/"], child: ["https://API.example.com/v1/x"], "case") == nil)
    }

    @Test func theDefaultPortMayBeWritten() {
        #expect(narrowingError(base: ["https://api.example.com/v1/"], child: ["https://api.example.com:443/v1/x"], "443") == nil)
        #expect(narrowingError(base: ["http://api.example.com:80/v1/"], child: ["http://api.example.com/v1/x"], "80") == nil)
    }

    @Test func aHostWithoutAPathCoversEveryPath() {
        #expect(narrowingError(base: ["https://api.example.com"], child: ["https://api.example.com/", "https://api.example.com/v1/x",
                                                                          "https://api.example.com"], "root") == nil)
    }

    @Test func theSameURLNarrows() {
        #expect(narrowingError(base: ["https://[::1]:8080/v1/"], child: ["https://[::1]:8080/v1/"], "ipv6") == nil)
    }

    @Test func aBaseWithoutATrailingSlashEndsAtASegment() {
        #expect(narrowingError(base: ["https://api.example.com/v1"], child: ["https://api.example.com/v1/x"], "v1-x") == nil)
        #expect(narrowingError(base: ["https://api.example.com/v1"], child: ["https://api.example.com/v1"], "v1") == nil)
        #expect(narrowingError(base: ["https://api.example.com/v1"], child: ["https://api.example.com/v1/"], "v1-slash") == nil)
        #expect(narrowingError(base: ["https://api.example.com/v1"], child: ["https://api.example.com/v12"], "v12")
            == notWithin("https://api.example.com/v12", base: "https://api.example.com/v1"))
    }

    @Test func eachChildURLNeedsABaseURL() {
        let base = ["https://a.example.com/v1/", "https://b.example.com/"]
        #expect(narrowingError(base: base, child: ["https://b.example.com/x", "https://a.example.com/v1/y"], "two") == nil)
        #expect(narrowingError(base: base, child: ["https://b.example.com/x", "https://a.example.com/v2/"], "two-bad")
            == notWithin("https://a.example.com/v2/", base: "https://a.example.com/v1/"))
    }

    // MARK: isWithin

    @Test(arguments: [
        ("https://api.example.com/v1/x", "https://api.example.com/v1/", true),
        ("https://api.example.com/v1/", "https://api.example.com/v1/", true),
        ("https://api.example.com/v1", "https://api.example.com/v1/", false),
        ("https://api.example.com/v1x", "https://api.example.com/v1", false),
        ("https://api.example.com/v1/x", "https://api.example.com/v1", true),
        ("https://api.example.com.attacker.net/", "https://api.example.com", false),
        ("https://api.example.com:8443/admin", "https://api.example.com", false),
        ("https://api.example.com:443/admin", "https://api.example.com", true),
        ("https://API.EXAMPLE.COM/v1/x", "https://api.example.com/v1/", true),
        ("https://api.example.com/V1/x", "https://api.example.com/v1/", false),
        ("https://api.example.com/v1/../admin", "https://api.example.com/v1/", false),
        ("https://api.example.com/v1/%2e%2e/admin", "https://api.example.com/v1/", false),
        ("https://api.example.com/v1/x", "https://api.example.com/v1/../", false),
        ("https://[::1]:8443/x", "https://[::1]:8443/", true),
        ("https://[::1]/x", "https://[::1]:8443/", false),
        ("https://cafe\u{301}.example/", "https://caf\u{e9}.example/", false),
        ("https://x.example/cafe\u{301}/a", "https://x.example/caf\u{e9}/", false),
    ])
    func isWithin(url: String, base: String, within: Bool) {
        #expect(PolicyRules.isWithin(url, base) == within)
    }

    // MARK: Validation

    @Test func urlsAreTakenApart() {
        #expect(Validate.allowListURL("https://API.Example.com") == .init(scheme: "https", host: "api.example.com", port: 443, path: "/"))
        #expect(Validate.allowListURL("http://localhost:8080/v1") == .init(scheme: "http", host: "localhost", port: 8080, path: "/v1"))
        #expect(Validate.allowListURL("http://[::1]/x/") == .init(scheme: "http", host: "[::1]", port: 80, path: "/x/"))
        #expect(Validate.allowListURL("https://[FE80::1]:8443/") == .init(scheme: "https", host: "[fe80::1]", port: 8443, path: "/"))
        #expect(Validate.allowListURL("https://a.b/../x") == nil)
    }

    @Test(arguments: [
        Rejected("dot-dot segment", "https://api.example.com/v1/../admin", "must not have a `.` or `..` path segment"),
        Rejected("dot-dot at the end", "https://api.example.com/v1/..", "must not have a `.` or `..` path segment"),
        Rejected("dot segment", "https://api.example.com/./v1/", "must not have a `.` or `..` path segment"),
        Rejected("encoded dots", "https://api.example.com/v1/%2e%2e/admin", "must not percent-encode `.` or `/` in its path (%2e, %2f)"),
        Rejected("encoded capital dot", "https://api.example.com/v1/%2E./admin", "must not percent-encode `.` or `/` in its path (%2e, %2f)"),
        Rejected("encoded dot inside a name", "https://api.example.com/v1/a%2ejson", "must not percent-encode `.` or `/` in its path (%2e, %2f)"),
        Rejected("encoded slash", "https://api.example.com/v1%2f..%2fadmin", "must not percent-encode `.` or `/` in its path (%2e, %2f)"),
        Rejected("encoded capital slash", "https://api.example.com/v1%2F", "must not percent-encode `.` or `/` in its path (%2e, %2f)"),
        Rejected("broken escape", "https://api.example.com/v1/%zz", "has a `%` in its path that is not followed by two hex digits"),
        Rejected("escape cut short", "https://api.example.com/v1/%2", "has a `%` in its path that is not followed by two hex digits"),
        Rejected("empty segment", "https://api.example.com//admin", "must not have an empty path segment (`//`)"),
        Rejected("empty segment inside", "https://api.example.com/v1//x", "must not have an empty path segment (`//`)"),
        Rejected("signed port", "https://api.example.com:+443/", "has a port that is not a number from 1 to 65535"),
        Rejected("empty port", "https://api.example.com:/", "has a port that is not a number from 1 to 65535"),
        Rejected("unclosed IPv6 bracket", "https://[::1/", "has a host name with characters a host name cannot have"),
        Rejected("empty IPv6 brackets", "https://[]/", "has a host name with characters a host name cannot have"),
    ])
    func aBadPathIsRejected(_ url: Rejected) {
        let error = "p.toml:3: `capabilities.net.urls`: `\(url.text)` \(url.error)"
        #expect(parseError("level = \"standard\"\n[capabilities.net]\nurls = [\"\(url.text)\"]")?.description == error)
        #expect(Validate.urlProblem(url.text) == url.error)
        #expect(Validate.allowListURL(url.text) == nil)
    }

    @Test(arguments: ["https://api.example.com", "https://api.example.com/", "https://api.example.com/v1/items",
                      "http://localhost:8080/", "https://[::1]:8443/x", "https://api.example.com/v1/a.json",
                      "https://api.example.com/.well-known/", "https://api.example.com/v1/..x/", "https://api.example.com/a%20b/",
                      "https://api.example.com/%41/"])
    func aCleanURLIsAccepted(_ url: String) {
        #expect(Validate.urlProblem(url) == nil)
        #expect(parseError("level = \"standard\"\n[capabilities.net]\nurls = [\"\(url)\"]") == nil)
    }
}
