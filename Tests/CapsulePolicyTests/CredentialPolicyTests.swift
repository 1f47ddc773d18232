// [capabilities.net.credentials]: secrets the broker attaches per host, checked when the policy loads.
import Testing
@testable import CapsulePolicy

@Suite struct CredentialPolicyTests {
    static let base = """
        level = "standard"
        [capabilities.net]
        urls = ["https://api.example.com/v1/", "http://127.0.0.1:8080/"]

        """

    @Test func credentialsAreReadInBothForms() throws {
        let policy = try PolicyLoader.parse(Self.base + """
            [capabilities.net.credentials]
            "api.example.com" = { header = "Authorization", value_from_env = "EXAMPLE_TOKEN" }
            "127.0.0.1" = { header = "X-Api-Key", value_from_file = "/etc/capsule/key" }
            """, file: "p.toml")
        #expect(policy.capabilities.net?.credentials == [
            "api.example.com": NetCredential(header: "Authorization", source: .environment("EXAMPLE_TOKEN")),
            "127.0.0.1": NetCredential(header: "X-Api-Key", source: .file("/etc/capsule/key")),
        ])
        let inline = try PolicyLoader.parse(Self.base.replacingOccurrences("urls =", with: """
            credentials = { "API.example.com" = { header = "Authorization", value_from_env = "T" } }
            urls =
            """), file: "p.toml")
        #expect(inline.capabilities.net?.credentials["api.example.com"]?.header == "Authorization", "hosts compare without case")
        // show writes them back so that they load to the same policy.
        let shown = policy.tomlText
        #expect(try PolicyLoader.parse(shown, file: "shown.toml").capabilities.net?.credentials == policy.capabilities.net?.credentials)
    }

    @Test(arguments: [
        (#""other.example.com" = { header = "A", value_from_env = "T" }"#,
         "p.toml:4: `capabilities.net.credentials`: `other.example.com` is not the host of any of urls; a credential goes only to a host the code may reach"),
        (#""api.example.com" = { header = "A" }"#,
         "p.toml:4: `capabilities.net.credentials`: missing: the credential for `api.example.com` has no value_from_env or value_from_file"),
        (#""api.example.com" = { header = "Bad Header", value_from_env = "T" }"#,
         "p.toml:5: `capabilities.net.credentials.\"api.example.com\".header`: must be an HTTP header name such as \"Authorization\""),
        (#""api.example.com" = { header = "A", value_from_file = "relative/key" }"#,
         nil),
        (#""api.example.com" = { header = "A", value = "inline secret" }"#,
         "p.toml:5: `capabilities.net.credentials.\"api.example.com\".value`: a credential takes header, and value_from_env or value_from_file"),
    ])
    func badCredentialsSayWhatIsWrong(_ line: String, _ message: String?) {
        let error = parseError(Self.base + "[capabilities.net.credentials]\n" + line)
        if let message { #expect(error?.description == message, "\(String(describing: error))") } else { #expect(error != nil) }
    }

    @Test func extendsMayOnlyRemoveCredentials() throws {
        try withTemporaryDirectory("credentials") { directory in
            let base = directory.write("base.toml", Self.base + """
                [capabilities.net.credentials]
                "api.example.com" = { header = "Authorization", value_from_env = "T" }
                """)
            _ = base
            let removing = directory.write("narrow.toml", "extends = \"base.toml\"\n")
            #expect(loadError(removing) == nil)
            let swapping = directory.write("swap.toml", """
                extends = "base.toml"
                [capabilities.net.credentials]
                "api.example.com" = { header = "Authorization", value_from_env = "OTHER" }
                """)
            #expect(loadError(swapping)?.all.contains { $0.message.contains("may only remove credentials") } == true,
                    "\(String(describing: loadError(swapping)))")
        }
    }
}

extension String {
    func replacingOccurrences(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
