import Testing
@testable import CapsulePolicy

/// What `policy check` lists for a file that extends another: every widening, and grants that a
/// lower `level` cannot keep, each at a line of the file with where it came from.
@Suite struct NarrowingReportTests {
    @Test func everyWideningIsListedNotJustTheFirst() {
        let text = """
            extends = "restricted"
            [limits]
            memory_mb = 1024
            timeout_s = 60
            max_fds = 1000
            [sandbox]
            readonly_paths = ["/srv/data"]
            [capabilities.env]
            names = ["HOME"]
            """
        let narrow = "a policy that extends `restricted` may only narrow it"
        #expect(parseError(text)?.all.map(\.description) == [
            "p.toml:3: `limits.memory_mb`: 1024 is more than the 512 it allows; \(narrow)",
            "p.toml:4: `limits.timeout_s`: 60 is more than the 30 it allows; \(narrow)",
            "p.toml:5: `limits.max_fds`: 1000 is more than the 100 it allows; \(narrow)",
            "p.toml:7: `sandbox.readonly_paths`: `/srv/data` is not under a path it allows; \(narrow)",
            "p.toml:8: `capabilities.env`: it does not grant this capability; \(narrow)",
        ])
    }

    @Test func wideningsAreListedWithOtherProblems() {
        // A bad value does not hide a widening elsewhere, and a key is reported once.
        let text = "extends = \"sandbox\"\n[limits]\nmemory_mb = \"lots\"\ntimeout_s = 60\n[capabilities.input]\n"
        #expect(parseError(text)?.all.map(\.description) == [
            "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not \"lots\"",
            "p.toml:4: `limits.timeout_s`: 60 is more than the 30 it allows; a policy that extends `sandbox` may only narrow it",
            "p.toml:5: `capabilities.input`: needs level `restricted` or higher; this policy is `sandbox`",
        ])
    }

    @Test func aCapabilityTheBaseLacksIsOneProblem() {
        // Its own keys are not compared with a grant that does not exist.
        let text = "extends = \"restricted\"\n[capabilities.env]\nnames = [\"HOME\"]\nrate_per_minute = 5\n"
        #expect(parseError(text)?.all.count == 1)
    }

    @Test func anInheritedGrantAboveALowerLevelNamesTheLevelLineAndTheBase() {
        let text = "extends = \"restricted\"\nlevel = \"sandbox\"\n"
        #expect(parseError(text)?.all.map(\.description) == [
            "p.toml:2: `capabilities.input`: needs level `restricted` or higher; this policy is `sandbox`, but it inherits "
                + "the grant from `restricted`, which it extends (line 1): turn it off with enabled = false in "
                + "[capabilities.input], or leave `level` out to keep the level of `restricted`",
        ])
        #expect(parseError(text + "[capabilities.input]\nenabled = false\n") == nil, "turning it off, as the message says, works")
    }

    @Test func anInheritedKeySaysHowToDropIt() {
        let network = parseError("extends = \"unrestricted\"\nlevel = \"trusted\"\n")
        #expect(network?.all.map(\.description) == [
            "p.toml:2: `sandbox.network`: needs level `unrestricted` or higher; this policy is `trusted`, but it inherits "
                + "the grant from `unrestricted`, which it extends (line 1): set network = \"none\" in [sandbox], "
                + "or leave `level` out to keep the level of `unrestricted`",
        ])
        #expect(parseError("extends = \"unrestricted\"\nlevel = \"trusted\"\n[sandbox]\nnetwork = \"none\"\n") == nil)
    }

    @Test func anInheritedGrantFromAFileNamesTheFile() throws {
        try withTemporaryDirectory("inherited-grant") { dir in
            dir.write("base.toml", "level = \"standard\"\n[capabilities.file]\nread = [\"/srv\"]\nwrite = [\"/srv/out\"]\n")
            let child = dir.write("child.toml", "# narrower\nextends = \"base.toml\"\nlevel = \"restricted\"\n")
            #expect(loadError(child)?.all.map(\.description) == [
                "\(child):3: `capabilities.file.write`: needs level `standard` or higher; this policy is `restricted`, but it "
                    + "inherits the grant from `\(dir.path)/base.toml`, which it extends (line 2): set write = [] in "
                    + "[capabilities.file], or leave `level` out to keep the level of `\(dir.path)/base.toml`",
            ])
        }
    }
}

/// There is no `time` capability (docs/policy.md says why): a policy that names one is told so, once.
@Suite struct RemovedTimeCapabilityTests {
    static let reason = "there is no `time` capability: code in the sandbox can always read the clock (the vDSO answers "
        + "clock_gettime without a system call, so no policy can withhold or fake it); delete [capabilities.time] and its keys"

    @Test(arguments: [
        ("[capabilities.time]\nenabled = true\nask = false\nrate_per_minute = 5", 2),
        ("capabilities.time.enabled = true", 2),
        ("[capabilities]\n\ntime = { enabled = true }", 4),
        ("capabilities.time = true", 2),
        ("[capabilities.time.sub]", 2),
    ])
    func aTimeTableSaysThereIsNoTimeCapability(table: String, line: Int) {
        #expect(parseError("level = \"restricted\"\n" + table)?.all.map(\.description)
            == ["p.toml:\(line): `capabilities.time`: \(Self.reason)"])
    }

    @Test func noBuiltInPolicyGrantsOrMentionsTime() throws {
        for level in Level.allCases {
            let policy = try PolicyLoader.builtin(level)
            #expect(!policy.tomlText.contains("time]"), "\(level)")
            #expect(!policy.explanation.contains("(time)"), "\(level)")
        }
    }
}

/// Grants this build does not enforce are named, from the one list of what it enforces.
@Suite struct UnenforcedGrantTests {
    static let everything = """
        level = "trusted"
        [capabilities.input]
        [capabilities.env]
        names = ["LANG"]
        [capabilities.file]
        read = ["/srv"]
        [capabilities.net]
        urls = ["https://example.com/"]
        [capabilities.db]
        databases = { app = "/srv/app.sqlite" }
        [capabilities.custom.ocr]
        command = ["/usr/bin/ocr"]
        """

    @Test func everyTableOutsideTheEnforcedSetGetsANote() throws {
        let policy = try PolicyLoader.parse(Self.everything, file: "p.toml")
        let tables = ["display", "input", "env", "file", "net", "db", "custom.ocr"]
        let unenforced = tables.filter { !Capabilities.enforcedCapabilities.contains(String($0.prefix { $0 != "." })) }
        #expect(policy.notes == unenforced.map {
            "[capabilities.\($0)] has no effect yet: this build of capsule does not enforce it (nothing it grants is reachable)"
        })
        if policy.notes.isEmpty {
            #expect(!policy.explanation.contains("note:"), "\(policy.explanation)")
        } else {
            #expect(policy.explanation.contains("\n\n" + policy.notes.map { "note: \($0)\n" }.joined() + "\nLimits:\n"), "\(policy.explanation)")
        }
    }

    @Test func theBrokerServesEveryTable() throws {
        // input() is answered only where `input` is granted; the broker serves every other table
        // with every common key (Tests/Integration and Tests/CapsuleCapabilitiesTests prove them); net is not served yet.
        #expect(Capabilities.enforcedCapabilities.filter { !$0.contains(".") } == ["input", "display", "env", "file", "net", "db", "custom"] as Set)
        let agent = try PolicyLoader.load(repositoryRoot + "/examples/policies/agent.toml")
        #expect(agent.notes.isEmpty, "\(agent.notes)")
        let db = try PolicyLoader.parse("level = \"standard\"\n[capabilities.db]\ndatabases = { a = \"/srv/a.sqlite\" }\n", file: "p.toml")
        #expect(db.notes.isEmpty, "\(db.notes)")
    }

    @Test func keysOfAnEnforcedTableThatDoNothingAreNamed() throws {
        let policy = try PolicyLoader.parse("level = \"restricted\"\n[capabilities.display]\nenabled = false\n"
                                            + "[capabilities.input]\nask = true\nrate_per_minute = 5\nmax_bytes = 10\n", file: "p.toml")
        #expect(policy.notes == ["ask = true", "rate_per_minute = 5", "max_bytes = 10"].map {
            "`\($0)` in [capabilities.input] has no effect yet: this build of capsule does not enforce it"
        })
        let quiet = try PolicyLoader.parse("level = \"restricted\"\n[capabilities.display]\nenabled = false\n[capabilities.input]\n",
                                           file: "p.toml")
        #expect(quiet.notes.isEmpty)
        #expect(!quiet.explanation.contains("note:"))
    }
}

/// docs/policy.md names every path `readonly_paths` refuses, and the loader refuses each.
@Suite struct ReadonlyPathDocsTests {
    @Test func theDocsListEveryRefusedDirectory() throws {
        let docs = try #require(readText(repositoryRoot + "/docs/policy.md"))
        let section = try #require(docs.firstRange(of: "`readonly_paths` refuses").map { docs[$0.lowerBound...].prefix(1500) })
        for path in Validate.socketDirectories + Validate.reservedPaths {
            #expect(section.contains("`\(path)`"), "docs/policy.md does not name \(path) where it lists refused read-only paths")
            let error = parseError("level = \"restricted\"\n[sandbox]\nreadonly_paths = [\"\(path)/x\"]")
            #expect(error?.description.contains("`\(path)/x` overlaps /") == true, "\(path): \(String(describing: error))")
        }
    }
}

/// Messages and output that said one thing where the docs said another, or said it badly.
@Suite struct PolicyWordingTests {
    @Test(arguments: [
        ("0x100000", "hexadecimal numbers such as 0x100000 are not used in policies; write 1048576"),
        ("0x10_0000", "hexadecimal numbers such as 0x10_0000 are not used in policies; write 1048576"),
        ("0o777", "octal numbers such as 0o777 are not used in policies; write 511"),
        ("0b1010", "binary numbers such as 0b1010 are not used in policies; write 10"),
        ("0xFFFFFFFFFFFFFFFFFFFF", "hexadecimal numbers such as 0xFFFFFFFFFFFFFFFFFFFF are not used in policies; write the number in decimal"),
        ("0xZZ", "`0xZZ` is not a value; strings need quotes, like \"0xZZ\""),
    ])
    func numbersInOtherBasesGetTheirDecimal(value: String, message: String) {
        #expect(parseError(limitsHeader + "max_output_bytes = \(value)")?.description == "p.toml:3: \(message)")
    }

    @Test func cpusSaysWhatIsExpected() {
        #expect(parseError(limitsHeader + "cpus = [0, \"1\"]")?.description
            == "p.toml:3: `limits.cpus`: must list core numbers from 0 to 1023, not \"1\"")
        #expect(parseError(limitsHeader + "cpus = 1")?.description
            == "p.toml:3: `limits.cpus`: must be an array of core numbers, like cpus = [0, 1], not 1")
    }

    @Test(arguments: [(16 << 20, "16 MiB"), (1 << 30, "1 GiB"), (3 << 10, "3 KiB"), ((16 << 20) + 1, "16777217 bytes"),
                      (1000, "1000 bytes"), (1, "1 byte")])
    func sizesReadInBinaryUnitsWhenExact(bytes: Int, text: String) {
        #expect(byteText(bytes) == text)
    }

    @Test func explainShowsSizesInUnits() throws {
        let policy = try PolicyLoader.parse(limitsHeader + "max_output_bytes = 1000001\nmax_file_bytes = 1048576\n"
                                            + "[capabilities.display]\nmax_bytes = 2097152\n", file: "p.toml")
        let text = policy.explanation
        #expect(text.contains("files up to 1 MiB\n"), "\(text)")
        #expect(text.contains("output up to 1000001 bytes per execution, messages up to 16 MiB\n"), "\(text)")
        #expect(text.contains("(at most 2 MiB a call)"), "\(text)")
        #expect(!text.contains("16777216"), "\(text)")
    }
}
