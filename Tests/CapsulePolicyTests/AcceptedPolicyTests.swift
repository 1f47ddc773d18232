import Testing
@testable import CapsulePolicy

/// Policies `PolicyLoader.parse` must accept, and what they mean.
@Suite struct AcceptedPolicyTests {
    private func limits(_ lines: String) throws -> Limits {
        try PolicyLoader.parse(limitsHeader + lines, file: "p.toml").limits
    }

    @Test func everyLimitIsRead() throws {
        let policy = try PolicyLoader.parse("""
            level = "trusted"
            description = "Everything set"

            [limits]
            memory_mb = 1024
            cpu_seconds = 120
            timeout_s = 2.5
            max_fds = 256
            max_processes = 8
            max_output_bytes = 1048576
            max_file_bytes = 10
            workspace_mb = 20
            max_frame_bytes = 8388608
            """, file: "all.toml")
        #expect(policy.level == .trusted)
        #expect(policy.network == NetworkMode.none)
        #expect(policy.origin == "all.toml")
        #expect(policy.environment.isEmpty)
        var expected = Limits()
        expected.memoryMB = 1024
        expected.cpuSeconds = 120
        expected.timeoutSeconds = 2.5
        expected.maxFDs = 256
        expected.maxProcesses = 8
        expected.maxOutputBytes = 1_048_576
        expected.maxFileBytes = 10
        expected.workspaceMB = 20
        expected.maxFrameBytes = 8 << 20
        #expect(policy.limits == expected)
    }

    @Test func unsetLimitsKeepTheirDefaults() throws {
        var expected = Limits()
        expected.maxFDs = 32
        #expect(try limits("max_fds = 32") == expected)
        #expect(try PolicyLoader.parse("level = \"standard\"", file: "p.toml") == Policy(level: .standard, origin: "p.toml"))
        #expect(try PolicyLoader.parse("level = \"standard\"\n[limits]\n", file: "p.toml").limits == Limits())
    }

    @Test(arguments: Level.allCases)
    func aLevelAloneGrantsNoNetwork(level: Level) throws {
        // `level` is a ceiling: the host network must be asked for, even at unrestricted.
        let policy = try PolicyLoader.parse("level = \"\(level.rawValue)\"", file: "p.toml")
        #expect(policy.level == level)
        #expect(policy.network == NetworkMode.none)
        #expect(try PolicyLoader.load(level.rawValue).network == (level == .unrestricted ? .host : NetworkMode.none))
    }

    @Test func limitsAsAnInlineTableMeanTheSameAsTheTable() throws {
        let inline = try PolicyLoader.parse("level = \"sandbox\"\nlimits = { memory_mb = 100 }", file: "p.toml")
        let table = try PolicyLoader.parse("level = \"sandbox\"\n[limits]\nmemory_mb = 100", file: "p.toml")
        #expect(inline == table)
        #expect(inline.limits.memoryMB == 100)
    }

    @Test func rangesIncludeTheirBounds() throws {
        #expect(try limits("memory_mb = 64").memoryMB == 64)
        #expect(try limits("memory_mb = 1048576").memoryMB == 1_048_576)
        #expect(try limits("cpu_seconds = 1").cpuSeconds == 1)
        #expect(try limits("cpu_seconds = 86400").cpuSeconds == 86400)
        #expect(try limits("max_fds = 16").maxFDs == 16)
        #expect(try limits("max_fds = 65536").maxFDs == 65536)
        #expect(try limits("max_processes = 4096").maxProcesses == 4096)
        #expect(try limits("max_output_bytes = 1099511627776").maxOutputBytes == 1 << 40)
        #expect(try limits("max_file_bytes = 1").maxFileBytes == 1)
        #expect(try limits("workspace_mb = 1048576").workspaceMB == 1_048_576)
        #expect(try limits("max_frame_bytes = 8388608").maxFrameBytes == 8 << 20)
        #expect(try limits("max_frame_bytes = 1073741824").maxFrameBytes == 1 << 30)
    }

    @Test func timeoutTakesIntegersAndFractions() throws {
        #expect(try limits("timeout_s = 0.5").timeoutSeconds == 0.5)
        #expect(try limits("timeout_s = 0.1").timeoutSeconds == 0.1)
        #expect(try limits("timeout_s = 1e-1").timeoutSeconds == 0.1)
        #expect(try limits("timeout_s = 1").timeoutSeconds == 1)
        #expect(try limits("timeout_s = 86400").timeoutSeconds == 86400)
        #expect(try limits("timeout_s = 86400.0").timeoutSeconds == 86400)
        #expect(try limits("timeout_s = 1.5e2").timeoutSeconds == 150)
        #expect(try limits("timeout_s = 2E1").timeoutSeconds == 20)
        #expect(try limits("timeout_s = +30").timeoutSeconds == 30)
        #expect(try limits("timeout_s = 1_000.5").timeoutSeconds == 1000.5)
    }

    @Test func underscoresBetweenDigits() throws {
        #expect(try limits("memory_mb = 1_000").memoryMB == 1000)
        #expect(try limits("max_output_bytes = 16_777_216").maxOutputBytes == 16_777_216)
        #expect(try limits("max_frame_bytes = 8_388_608").maxFrameBytes == 8 << 20)
        #expect(try limits("memory_mb = +1_024").memoryMB == 1024)
    }

    @Test func commentsBlankLinesAndWhitespace() throws {
        let policy = try PolicyLoader.parse("""
            # leading comment

            \t
               level\t=\t"restricted"#no space before the comment
            description = "a # is not a comment inside a string" # but this is
            # [limits] in a comment is not a table
            [limits]# comment after the header
              memory_mb=64
            \tmax_fds = 20   \t# indented with a tab
            """, file: "p.toml")
        #expect(policy.level == .restricted)
        #expect(policy.limits.memoryMB == 64)
        #expect(policy.limits.maxFDs == 20)
    }

    @Test func trailingNewlinesAndMissingFinalNewline() throws {
        #expect(try PolicyLoader.parse("level = \"sandbox\"", file: "p.toml").level == .sandbox)
        #expect(try PolicyLoader.parse("level = \"sandbox\"\n\n\n", file: "p.toml").level == .sandbox)
        #expect(try PolicyLoader.parse("\n\nlevel = \"sandbox\"", file: "p.toml").level == .sandbox)
    }

    @Test func quotedAndDottedKeys() throws {
        #expect(try PolicyLoader.parse("\"level\" = 'trusted'", file: "p.toml").level == .trusted)
        #expect(try PolicyLoader.parse("'level' = \"trusted\"", file: "p.toml").level == .trusted)
        #expect(try PolicyLoader.parse("level = \"sandbox\"\nlimits.max_fds = 20", file: "p.toml").limits.maxFDs == 20)
        #expect(try PolicyLoader.parse("level = \"sandbox\"\nlimits . max_fds = 20", file: "p.toml").limits.maxFDs == 20)
        #expect(try PolicyLoader.parse("level = \"sandbox\"\nlimits.\"max_fds\" = 20", file: "p.toml").limits.maxFDs == 20)
        #expect(try limits("\"max_fds\" = 20").maxFDs == 20)
        #expect(try PolicyLoader.parse("level = \"sandbox\"\n[ limits ]\nmax_fds = 20", file: "p.toml").limits.maxFDs == 20)
        #expect(try PolicyLoader.parse("level = \"sandbox\"\n[\"limits\"]\nmax_fds = 20", file: "p.toml").limits.maxFDs == 20)
    }

    @Test func levelMayComeAfterADottedLimit() throws {
        let policy = try PolicyLoader.parse("limits.memory_mb = 100\nlevel = \"standard\"", file: "p.toml")
        #expect(policy.level == .standard)
        #expect(policy.limits.memoryMB == 100)
    }

    @Test func descriptionMayBeAnyString() throws {
        for description in ["\"\"", "''", "'C:\\path\\no escapes'", "\"tab\\there \\u00e9 \\U0001F600 \\\" \\\\\"",
                            "\"raw unicode: 世界 😀\"", "\"a\ttab\""] {
            #expect(try PolicyLoader.parse("level = \"sandbox\"\ndescription = \(description)", file: "p.toml").level == .sandbox)
        }
    }
}

@Suite struct ByteOrderMarkTests {
    @Test func aLeadingByteOrderMarkIsSkipped() throws {
        let policy = try PolicyLoader.parse("\u{FEFF}level = \"trusted\"\n[limits]\nmax_fds = 20", file: "p.toml")
        #expect(policy.level == .trusted)
        #expect(policy.limits.maxFDs == 20)
    }
}
