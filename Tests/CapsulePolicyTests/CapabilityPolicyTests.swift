import Testing
@testable import CapsulePolicy

/// Escalation attempts and malformed capability tables, each with the exact error a user sees.
private let escalations: [Rejected] = [
    Rejected("host network at sandbox", "level = \"sandbox\"\n[sandbox]\nnetwork = \"host\"",
             "p.toml:3: `sandbox.network`: needs level `unrestricted` or higher; this policy is `sandbox`"),
    Rejected("host network at trusted", "level = \"trusted\"\nsandbox.network = \"host\"",
             "p.toml:2: `sandbox.network`: needs level `unrestricted` or higher; this policy is `trusted`"),
    Rejected("unknown network mode", "level = \"sandbox\"\n[sandbox]\nnetwork = \"bridge\"",
             "p.toml:3: `sandbox.network`: must be \"none\" or \"host\", not \"bridge\""),
    Rejected("readonly paths at sandbox", "level = \"sandbox\"\n[sandbox]\nreadonly_paths = [\"/etc/ssl\"]",
             "p.toml:3: `sandbox.readonly_paths`: needs level `restricted` or higher; this policy is `sandbox`"),
    Rejected("relative readonly path", "level = \"restricted\"\n[sandbox]\nreadonly_paths = [\"data\"]",
             "p.toml:3: `sandbox.readonly_paths`: `data` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\""),
    Rejected("dot-dot in a readonly path", "level = \"restricted\"\n[sandbox]\nreadonly_paths = [\"/srv/../etc\"]",
             "p.toml:3: `sandbox.readonly_paths`: `/srv/../etc` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\""),
    Rejected("env as a string", "level = \"sandbox\"\n[sandbox]\nenv = \"A=1\"",
             "p.toml:3: `sandbox.env`: must be a table of NAME = \"value\", like env = { LANG = \"C.UTF-8\" }"),
    Rejected("env name with a dash", "level = \"sandbox\"\n[sandbox]\nenv = { \"MY-VAR\" = \"1\" }",
             "p.toml:3: `sandbox.env.MY-VAR`: an environment variable's name must be letters, digits and _ (starting with a letter or _)"),
    Rejected("env value not a string", "level = \"sandbox\"\n[sandbox.env]\nA = 1",
             "p.toml:3: `sandbox.env.A`: must be a string, not 1"),
    Rejected("env value with NUL", "level = \"sandbox\"\n[sandbox.env]\nA = \"x\\u0000y\"",
             "p.toml:3: `sandbox.env.A`: must not contain a NUL character"),
    Rejected("input at sandbox", "level = \"sandbox\"\n[capabilities.input]",
             "p.toml:2: `capabilities.input`: needs level `restricted` or higher; this policy is `sandbox`"),
    Rejected("env capability at sandbox", "level = \"sandbox\"\n[capabilities.env]\nnames = [\"HOME\"]",
             "p.toml:2: `capabilities.env`: needs level `restricted` or higher; this policy is `sandbox`"),
    Rejected("file read at sandbox", "level = \"sandbox\"\n[capabilities.file]\nread = [\"/srv\"]",
             "p.toml:2: `capabilities.file`: needs level `restricted` or higher; this policy is `sandbox`"),
    Rejected("file write at restricted", "level = \"restricted\"\n[capabilities.file]\nwrite = [\"/srv/out\"]",
             "p.toml:3: `capabilities.file.write`: needs level `standard` or higher; this policy is `restricted`"),
    Rejected("relative file root", "level = \"restricted\"\n[capabilities.file]\nread = [\"srv\"]",
             "p.toml:3: `capabilities.file.read`: `srv` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\""),
    Rejected("empty include pattern", "level = \"restricted\"\n[capabilities.file]\ninclude = [\"\"]",
             "p.toml:3: `capabilities.file.include`: must not contain an empty string"),
    Rejected("net at sandbox", "level = \"sandbox\"\n[capabilities.net]\nurls = [\"https://example.com/\"]",
             "p.toml:2: `capabilities.net`: needs level `standard` or higher; this policy is `sandbox`"),
    Rejected("net at restricted says which level", "level = \"restricted\"\ncapabilities.net = { urls = [\"https://a.b/\"] }",
             "p.toml:2: `capabilities.net`: needs level `standard` or higher; this policy is `restricted`"),
    Rejected("POST at standard", "level = \"standard\"\n[capabilities.net]\nmethods = [\"GET\", \"POST\"]",
             "p.toml:3: `capabilities.net.methods (POST)`: needs level `trusted` or higher; this policy is `standard`"),
    Rejected("websocket at standard", "level = \"standard\"\n[capabilities.net]\nwebsocket = true",
             "p.toml:3: `capabilities.net.websocket`: needs level `trusted` or higher; this policy is `standard`"),
    Rejected("unknown method", "level = \"trusted\"\n[capabilities.net]\nmethods = [\"CONNECT\"]",
             "p.toml:3: `capabilities.net.methods`: `CONNECT` is not an HTTP method capsule knows (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"),
    Rejected("ftp URL", "level = \"standard\"\n[capabilities.net]\nurls = [\"ftp://example.com/\"]",
             "p.toml:3: `capabilities.net.urls`: `ftp://example.com/` must start with https:// or http:// (or wss:// or ws:// for WebSockets)"),
    Rejected("URL with a password", "level = \"standard\"\n[capabilities.net]\nurls = [\"https://u:p@example.com/\"]",
             "p.toml:3: `capabilities.net.urls`: `https://u:p@example.com/` must not carry a user name or password"),
    Rejected("URL with a query", "level = \"standard\"\n[capabilities.net]\nurls = [\"https://example.com/?a=1\"]",
             "p.toml:3: `capabilities.net.urls`: `https://example.com/?a=1` must not have a query or fragment: it is a prefix"),
    Rejected("URL with a bad port", "level = \"standard\"\n[capabilities.net]\nurls = [\"https://example.com:99999/\"]",
             "p.toml:3: `capabilities.net.urls`: `https://example.com:99999/` has a port that is not a number from 1 to 65535"),
    Rejected("URL without a host", "level = \"standard\"\n[capabilities.net]\nurls = [\"https:///x\"]",
             "p.toml:3: `capabilities.net.urls`: `https:///x` has no host"),
    Rejected("URL host with odd characters", "level = \"standard\"\n[capabilities.net]\nurls = [\"https://exa_mple.com/\"]",
             "p.toml:3: `capabilities.net.urls`: `https://exa_mple.com/` has a host name with characters a host name cannot have"),
    Rejected("db at restricted", "level = \"restricted\"\n[capabilities.db.databases]\napp = \"/srv/app.sqlite\"",
             "p.toml:2: `capabilities.db`: needs level `standard` or higher; this policy is `restricted`"),
    Rejected("db write at standard", "level = \"standard\"\n[capabilities.db]\ndatabases = { app = \"/srv/a.sqlite\" }\nwrite = true",
             "p.toml:4: `capabilities.db.write`: needs level `trusted` or higher; this policy is `standard`"),
    Rejected("db without databases", "level = \"standard\"\n[capabilities.db]\nmax_rows = 10",
             "p.toml:2: `capabilities.db.databases`: missing: name each database, like databases = { app = \"/srv/app.sqlite\" }"),
    Rejected("db with a relative path", "level = \"standard\"\n[capabilities.db.databases]\napp = \"app.sqlite\"",
             "p.toml:3: `capabilities.db.databases.app`: `app.sqlite` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\""),
    Rejected("db databases as a string", "level = \"standard\"\n[capabilities.db]\ndatabases = \"/srv/a.sqlite\"",
             "p.toml:3: `capabilities.db.databases`: must be a table of name = \"/path/to.sqlite\""),
    Rejected("custom at standard", "level = \"standard\"\n[capabilities.custom.weather]\ncommand = [\"/usr/bin/weather\"]",
             "p.toml:2: `capabilities.custom.weather`: needs level `trusted` or higher; this policy is `standard`"),
    Rejected("custom without a command", "level = \"trusted\"\n[capabilities.custom.weather]\nask = true",
             "p.toml:2: `capabilities.custom.weather.command`: missing: name the plugin program to run"),
    Rejected("custom with a relative program", "level = \"trusted\"\n[capabilities.custom.weather]\ncommand = [\"weather\"]",
             "p.toml:3: `capabilities.custom.weather.command`: must start with the absolute path of the plugin program, like [\"/usr/local/bin/plugin\"]"),
    Rejected("custom with an odd name", "level = \"trusted\"\n[capabilities.custom.\"we ather\"]\ncommand = [\"/x\"]",
             "p.toml:2: `capabilities.custom.\"we ather\"`: a custom capability's name must be letters, digits and _ (starting with a letter or _)"),
    Rejected("unknown capability", "level = \"trusted\"\n[capabilities.shell]",
             "p.toml:2: `capabilities.shell`: unknown table"),
    Rejected("typo in a capability key", "level = \"standard\"\n[capabilities.net]\nurl = [\"https://a.b/\"]",
             "p.toml:3: `capabilities.net.url`: unknown key; did you mean `capabilities.net.urls`?"),
    Rejected("rate of zero", "level = \"sandbox\"\n[capabilities.display]\nrate_per_minute = 0",
             "p.toml:3: `capabilities.display.rate_per_minute`: must be a whole number from 1 to 1000000, not 0"),
    Rejected("ask as a string", "level = \"sandbox\"\n[capabilities.display]\nask = \"yes\"",
             "p.toml:3: `capabilities.display.ask`: must be true or false, not \"yes\""),
    Rejected("cpus empty", limitsHeader + "cpus = []",
             "p.toml:3: `limits.cpus`: an empty list of cores is not allowed: list the cores the code may run on, like cpus = [0, 1], or leave cpus out for all of them"),
    Rejected("cpus repeated", limitsHeader + "cpus = [0, 0]", "p.toml:3: `limits.cpus`: lists core 0 twice"),
    Rejected("cpus out of range", limitsHeader + "cpus = [4096]",
             "p.toml:3: `limits.cpus`: must list core numbers from 0 to 1023, not 4096"),
    Rejected("escalation hidden under an enabled = false elsewhere",
             "level = \"sandbox\"\n[capabilities.input]\nenabled = false\n[capabilities.net]\nurls = [\"https://a.b/\"]",
             "p.toml:4: `capabilities.net`: needs level `standard` or higher; this policy is `sandbox`"),
]

@Suite struct CapabilityPolicyTests {
    @Test(arguments: escalations)
    func isRejectedWithTheExactMessage(_ policy: Rejected) {
        #expect(parseError(policy.text)?.description == policy.error)
    }

    @Test func everyProblemOfAFileIsListed() throws {
        let text = "level = \"sandbox\"\n[limits]\nmemroy_mb = 5\nmax_fds = \"x\"\n[capabilities.net]\nurls = [\"https://x.com/\"]\n[sandbox]\nnetwork = \"host\"\n"
        let error = try #require(parseError(text))
        #expect(error.all.map(\.description) == [
            "p.toml:3: `limits.memroy_mb`: unknown key; did you mean `limits.memory_mb`?",
            "p.toml:4: `limits.max_fds`: must be a whole number from 16 to 65536, not \"x\"",
            "p.toml:5: `capabilities.net`: needs level `standard` or higher; this policy is `sandbox`",
            "p.toml:8: `sandbox.network`: needs level `unrestricted` or higher; this policy is `sandbox`",
        ])
    }

    @Test func grantsAreReadIntoThePolicy() throws {
        let policy = try PolicyLoader.parse("""
            level = "trusted"
            [sandbox]
            env = { LANG = "C.UTF-8" }
            readonly_paths = ["/srv/models"]
            [capabilities.file]
            read = ["/srv/in"]
            write = ["/srv/out"]
            exclude = ["*.key"]
            [capabilities.net]
            urls = [
                "https://api.example.com/v1/",  # the API
                "http://localhost:8080/",
            ]
            methods = ["GET", "POST"]
            rate_per_minute = 60
            ask = true
            [capabilities.db.databases]
            app = "/srv/app.sqlite"
            [capabilities.custom.weather]
            command = ["/usr/local/bin/weather", "--json"]
            """, file: "p.toml")
        #expect(policy.environment == ["LANG": "C.UTF-8"])
        #expect(policy.readonlyPaths == ["/srv/models"])
        let caps = policy.capabilities
        #expect(caps.file?.read == ["/srv/in"] && caps.file?.write == ["/srv/out"] && caps.file?.exclude == ["*.key"])
        #expect(caps.net?.urls == ["https://api.example.com/v1/", "http://localhost:8080/"])
        #expect(caps.net?.methods == ["GET", "POST"])
        #expect(caps.net?.grant.ratePerMinute == 60 && caps.net?.grant.ask == true)
        #expect(caps.db?.databases == ["app": "/srv/app.sqlite"] && caps.db?.write == false)
        #expect(caps.custom["weather"]?.command == ["/usr/local/bin/weather", "--json"])
        #expect(caps.display != nil && caps.input == nil)
    }

    @Test func showIsValidInputThatMeansTheSame() throws {
        for specifier in Level.allCases.map(\.rawValue) + ["\(repositoryRoot)/examples/policies/agent.toml",
                                                           "\(repositoryRoot)/examples/policies/ci-runner.toml"] {
            let policy = try PolicyLoader.load(specifier)
            var again = try PolicyLoader.parse(policy.tomlText, file: "shown.toml")
            again.origin = policy.origin
            #expect(again == policy, "\(specifier)\n\(policy.tomlText)")
        }
    }

    @Test func explainSaysWhatTheCodeCanDo() throws {
        let agent = try PolicyLoader.load("\(repositoryRoot)/examples/policies/agent.toml").explanation
        #expect(agent.contains("make GET requests to https://api.example.com/v1/ (net) (at most 60 calls a minute"))
        #expect(agent.contains("each call approved by a person"))
        #expect(agent.contains("read files under /srv/agent-data (files matching **, except **/*.key, **/.env) (file)"))
        let sandbox = try PolicyLoader.load("sandbox").explanation
        #expect(sandbox.contains("reach no network directly"))
        #expect(sandbox.contains("memory 512 MiB, CPU 60 s per process, 30 s of wall-clock time per execution"))
        #expect(!sandbox.contains("(net)"))
    }

    @Test func diffListsChangedSettings() throws {
        let sandbox = try PolicyLoader.load("sandbox"), restricted = try PolicyLoader.load("restricted")
        #expect(sandbox.differences(from: sandbox).isEmpty)
        let lines = sandbox.differences(from: restricted)
        #expect(lines.contains("- level = \"sandbox\""))
        #expect(lines.contains("+ level = \"restricted\""))
        #expect(lines.contains("+ capabilities.input.enabled = true"))
    }
}

/// `extends`: start from another policy and only narrow it.
@Suite(.serialized) struct ExtendsTests {
    @Test func narrowingALevelIsAccepted() throws {
        let policy = try PolicyLoader.parse("extends = \"standard\"\n[limits]\nmemory_mb = 128\n[capabilities.input]\nenabled = false",
                                           file: "p.toml")
        #expect(policy.level == .standard)
        #expect(policy.limits.memoryMB == 128)
        #expect(policy.capabilities.input?.enabled == false)
        #expect(policy.capabilities.display == (try PolicyLoader.load("standard")).capabilities.display)
    }

    @Test(arguments: [
        ("extends = \"sandbox\"\n[limits]\nmemory_mb = 1024",
         "p.toml:3: `limits.memory_mb`: 1024 is more than the 512 it allows; a policy that extends `sandbox` may only narrow it"),
        ("extends = \"sandbox\"\nlevel = \"trusted\"",
         "p.toml:2: `level`: `trusted` is wider than `sandbox`; a policy that extends `sandbox` may only narrow it"),
        ("extends = \"standard\"\n[limits]\ntimeout_s = 30.5",
         "p.toml:3: `limits.timeout_s`: 30.5 is more than the 30 it allows; a policy that extends `standard` may only narrow it"),
        ("extends = \"standard\"\n[capabilities.net]\nurls = [\"https://example.com/\"]",
         "p.toml:3: `capabilities.net.urls`: `https://example.com/` does not start with a URL it allows; a policy that extends `standard` may only narrow it"),
        ("extends = \"sandbox\"\n[capabilities.input]",
         "p.toml:2: `capabilities.input`: needs level `restricted` or higher; this policy is `sandbox`"),
        ("extends = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]",
         "p.toml:2: `capabilities.env`: it does not grant this capability; a policy that extends `restricted` may only narrow it"),
        ("extends = \"nonsense\"",
         "p.toml:1: `extends`: nonsense: cannot read the policy: No such file or directory; a level is one of sandbox, restricted, standard, trusted, unrestricted"),
        ("extends = 5", "p.toml:1: `extends`: must be a string, not 5"),
    ])
    func wideningIsRejected(text: String, error: String) {
        #expect(parseError(text)?.description == error)
    }

    @Test func aFileExtendsAFileBesideIt() throws {
        try withTemporaryDirectory("extends-chain") { dir in
            dir.write("base.toml", """
                level = "standard"
                [capabilities.net]
                urls = ["https://api.example.com/v1/"]
                rate_per_minute = 100
                ask = true
                """)
            let ok = dir.write("narrow.toml", """
                extends = "base.toml"
                [capabilities.net]
                urls = ["https://api.example.com/v1/items/"]
                rate_per_minute = 10
                """)
            let policy = try PolicyLoader.load(ok)
            #expect(policy.capabilities.net?.urls == ["https://api.example.com/v1/items/"])
            #expect(policy.capabilities.net?.grant.ask == true)
            let wide = dir.write("wide.toml", "extends = \"base.toml\"\n[capabilities.net]\nask = false\n")
            #expect(loadError(wide)?.description
                == "\(wide):3: `capabilities.net.ask`: it asks a person first; that must stay; a policy that extends `\(dir.path)/base.toml` may only narrow it")
            let rate = dir.write("rate.toml", "extends = \"./base.toml\"\ncapabilities.net.rate_per_minute = 1000\n")
            #expect(loadError(rate)?.description
                == "\(rate):2: `capabilities.net.rate_per_minute`: must be at most 100; a policy that extends `\(dir.path)/base.toml` may only narrow it")
        }
    }

    @Test func cyclesAreFound() {
        withTemporaryDirectory("extends-cycle") { dir in
            let a = dir.write("a.toml", "extends = \"b.toml\"\n")
            dir.write("b.toml", "extends = \"./a.toml\"\n")
            let self_ = dir.write("self.toml", "extends = \"self.toml\"\n")
            #expect(loadError(a)?.description == "\(dir.path)/b.toml:1: `extends`: forms a cycle: \(a) → \(dir.path)/b.toml → \(a)")
            #expect(loadError(self_)?.description == "\(self_):1: `extends`: forms a cycle: \(self_) → \(self_)")
        }
    }

    @Test func theExamplePoliciesCheckClean() throws {
        let ci = try PolicyLoader.load("\(repositoryRoot)/examples/policies/ci-runner.toml")
        #expect(ci.level == .sandbox && ci.limits.memoryMB == 256 && ci.limits.timeoutSeconds == 20)
        let agent = try PolicyLoader.load("\(repositoryRoot)/examples/policies/agent.toml")
        #expect(agent.level == .standard && agent.capabilities.net?.grant.ask == true)
    }
}

/// Policies are small; a hostile one must not be able to make checking it slow.
/// Read-only paths may not hide the sandbox's own layout or bring host sockets in.
@Suite struct ReadonlyPathTests {
    @Test(arguments: [
        ("/", "`/` overlaps /usr/lib/capsule, which the sandbox provides itself"),
        ("/usr", "`/usr` overlaps /usr/lib/capsule, which the sandbox provides itself"),
        ("/usr/lib/capsule/x", "`/usr/lib/capsule/x` overlaps /usr/lib/capsule, which the sandbox provides itself"),
        ("/etc", "`/etc` overlaps /etc/passwd, which the sandbox provides itself"),
        ("/dev/kmsg", "`/dev/kmsg` overlaps /dev, which the sandbox provides itself"),
        ("/proc/sys", "`/proc/sys` overlaps /proc, which the sandbox provides itself"),
        ("/workspace", "`/workspace` overlaps /workspace, which the sandbox provides itself"),
        ("/run/user/1000", "`/run/user/1000` overlaps /run, where hosts keep unix sockets a read-only bind would not keep the code from connecting to"),
        ("/tmp", "`/tmp` overlaps /tmp, where hosts keep unix sockets a read-only bind would not keep the code from connecting to"),
        ("/var", "`/var` overlaps /var/run, where hosts keep unix sockets a read-only bind would not keep the code from connecting to"),
    ])
    func isRefused(path: String, problem: String) {
        #expect(parseError("level = \"restricted\"\n[sandbox]\nreadonly_paths = [\"\(path)\"]")?.description
            == "p.toml:3: `sandbox.readonly_paths`: \(problem)")
    }

    @Test func ordinaryPathsAreAccepted() throws {
        let policy = try PolicyLoader.parse("level = \"restricted\"\n[sandbox]\nreadonly_paths = [\"/usr/share/dict\", \"/etc/ssl\", \"/srv/models\"]", file: "p.toml")
        #expect(policy.readonlyPaths == ["/usr/share/dict", "/etc/ssl", "/srv/models"])
    }
}

@Suite struct PolicySizeTests {
    @Test func listsAndTablesAreBounded() {
        let array = (0..<1025).map { "\"/p\($0)\"" }.joined(separator: ", ")
        #expect(parseError("level = \"restricted\"\n[sandbox]\nreadonly_paths = [\(array)]")?.description.hasPrefix(
            "p.toml:3: an array may hold at most 1024 values (column ") == true)
        let inline = (0..<1025).map { "A\($0) = \"x\"" }.joined(separator: ", ")
        #expect(parseError("level = \"sandbox\"\n[sandbox]\nenv = { \(inline) }")?.description.hasPrefix(
            "p.toml:3: an inline table may hold at most 1024 keys (column ") == true)
        let table = (0..<1025).map { "A\($0) = \"x\"" }.joined(separator: "\n")
        #expect(parseError("level = \"sandbox\"\n[sandbox.env]\n\(table)")?.description
            == "p.toml:1027: `sandbox.env.A1024`: a policy may pass at most 1024 environment variables")
    }
}

/// Text a policy supplies never reaches a terminal with its control characters live.
@Suite struct PolicyTextTests {
    @Test func explainAndErrorsEscapeControlCharacters() throws {
        let policy = try PolicyLoader.parse("level = \"restricted\"\ndescription = \"ok\\u001b]0;pwned\\u0007\"", file: "p.toml")
        #expect(policy.explanation.hasPrefix("Policy p.toml (level restricted): ok\\u001B]0;pwned\\u0007\n"))
        #expect(!policy.explanation.unicodeScalars.contains { $0.value == 0x1b })
        #expect(parseError("level = \"sand\\u001b[31mbox\"")?.description
            == "p.toml:1: `level`: must be one of \(quotedLevelNames), not \"sand\\u001B[31mbox\"")
        #expect(parseError("level = \"restricted\"\n[sandbox]\nreadonly_paths = [\"/etc\\u001b[2K\"]")?.description
            == "p.toml:3: `sandbox.readonly_paths`: `/etc\\u001B[2K` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\"")
    }
}
