// The net capability's rules without a network: which addresses are special, how request URLs
// and redirects parse, and when a special address may be reached.
import Testing
@testable import CapsuleCapabilities

@Suite struct NetRulesTests {
    @Test(arguments: ["127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "169.254.1.1",
                      "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "::ffff:127.0.0.1", "::ffff:7f00:1",
                      "fd00:ec2::254", "fc00::1", "fe80::1", "ff02::1", "64:ff9b::a00:1", "2002:a00:1::1", "::127.0.0.1"])
    func specialAddresses(_ address: String) {
        #expect(AddressRules.specialUse(address) != nil, "\(address)")
    }

    @Test(arguments: ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"])
    func publicAddresses(_ address: String) {
        #expect(AddressRules.specialUse(address) == nil, "\(address)")
    }

    @Test func ambiguousIPv4FormsAreNotAddresses() {
        for text in ["0177.0.0.1", "127.1", "0x7f.0.0.1", "127.0.0.1.", "1.2.3.256"] { #expect(AddressRules.ipv4(text) == nil, "\(text)") }
        #expect(AddressRules.specialUse("0177.0.0.1") == "not an IP address")
    }

    @Test func aSpecialAddressIsReachedOnlyThroughItsOwnLiteral() throws {
        let literal = try #require(RequestURL("http://127.0.0.1:8080/x"))
        #expect(NetCapability.addressProblem("127.0.0.1", for: literal) == nil)
        let named = try #require(RequestURL("http://localhost:8080/x"))
        #expect(NetCapability.addressProblem("127.0.0.1", for: named)
            == "'localhost' resolves to 127.0.0.1, a loopback address (127.0.0.0/8); only a URL that names the address itself in [capabilities.net] urls may reach it")
        let mapped = try #require(RequestURL("http://[::ffff:127.0.0.1]/"))
        #expect(NetCapability.addressProblem("::ffff:127.0.0.1", for: mapped) == nil, "listed exactly, it is the policy's choice")
        #expect(NetCapability.addressProblem("93.184.216.34", for: named) == nil)
        #expect(AddressRules.isMetadataName("Metadata.Google.Internal."))
    }

    @Test func requestURLs() throws {
        let url = try #require(RequestURL("HTTPS://API.Example.com/v1/items?q=1#top"))
        #expect(url.scheme == "https" && url.host == "api.example.com" && url.port == 443 && url.path == "/v1/items" && url.query == "q=1")
        #expect(url.prefixForm == "https://api.example.com:443/v1/items")
        #expect(RequestURL("http://[::1]:81")?.bareHost == "::1")
        for bad in ["ftp://x/", "http://user@host/", "http://host:0/", "http://host:99999/", "http:///x", "http://a b/"] {
            #expect(RequestURL(bad) == nil, "\(bad)")
        }
    }

    @Test func aWebSocketURLIsAllowedByItsOwnEntryOrItsHTTPForm() throws {
        let ws = try #require(RequestURL("WS://127.0.0.1:8080/feed?x=1"))
        #expect(ws.isWebSocket && !ws.isSecure && ws.port == 8080 && ws.target == "/feed?x=1")
        #expect(ws.allowListForms == ["ws://127.0.0.1:8080/feed", "http://127.0.0.1:8080/feed"])
        let wss = try #require(RequestURL("wss://stream.example.com/v2/ticks"))
        #expect(wss.port == 443 && wss.isSecure && wss.text == "wss://stream.example.com/v2/ticks")
        #expect(NetCapability.allowListProblem(ws, urls: ["http://127.0.0.1:8080/"]) == nil)
        #expect(NetCapability.allowListProblem(ws, urls: ["ws://127.0.0.1:8080/feed"]) == nil)
        #expect(NetCapability.allowListProblem(wss, urls: ["https://stream.example.com/v2/"]) == nil)
        #expect(NetCapability.allowListProblem(wss, urls: ["http://stream.example.com:443/v2/", "ws://stream.example.com:443/v2/"])?.isDenial == true,
                "wss needs a TLS entry")
        #expect(NetCapability.allowListProblem(ws, urls: ["https://127.0.0.1:8080/"])?.isDenial == true)
        let http = try #require(RequestURL("http://127.0.0.1:8080/feed"))
        #expect(NetCapability.allowListProblem(http, urls: ["ws://127.0.0.1:8080/"])?.isDenial == true, "a ws entry allows no fetch")
    }

    @Test func redirectsResolveAgainstTheRequest() throws {
        let url = try #require(RequestURL("http://a.example:8080/dir/page?x=1"))
        #expect(url.resolving("/top")?.text == "http://a.example:8080/top")
        #expect(url.resolving("next")?.text == "http://a.example:8080/dir/next")
        #expect(url.resolving("?y=2")?.text == "http://a.example:8080/dir/page?y=2")
        #expect(url.resolving("//b.example/x")?.text == "http://b.example/x")
        #expect(url.resolving("https://c.example/")?.text == "https://c.example/")
        #expect(url.resolving("javascript:alert(1)")?.host == "a.example", "a relative name, never a new scheme")
    }

    @Test func methodsAndURLsComeFromThePolicy() throws {
        let url = try #require(RequestURL("https://api.example.com/v1/x"))
        #expect(NetCapability.check(url, method: "GET", urls: ["https://api.example.com/v1/"], methods: ["GET"]) == nil)
        #expect(NetCapability.check(url, method: "POST", urls: ["https://api.example.com/v1/"], methods: ["GET"])?.isDenial == true)
        #expect(NetCapability.check(url, method: "GET", urls: ["https://api.example.com/v2/"], methods: ["GET"])?.message
            == "'https://api.example.com/v1/x' is not within the urls of [capabilities.net] (https://api.example.com/v2/)")
        let sneaky = try #require(RequestURL("https://api.example.com/v1/../admin"))
        #expect(NetCapability.check(sneaky, method: "GET", urls: ["https://api.example.com/v1/"], methods: ["GET"]) != nil)
    }
}
