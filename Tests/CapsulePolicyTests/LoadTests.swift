import Testing
@testable import CapsulePolicy

/// `PolicyLoader.load` with level names and with the built-in files in `policies/`.
@Suite struct LoadTests {
    @Test(arguments: Level.allCases)
    func eachLevelNameLoadsWithDefaults(level: Level) throws {
        let policy = try PolicyLoader.load(level.rawValue)
        #expect(policy.level == level)
        #expect(policy.limits == Limits())
        #expect(policy.limits.memoryMB == 512)
        #expect(policy.limits.timeoutSeconds == 30)
        #expect(policy.limits.maxFDs == 100)
        #expect(policy.network == (level == .unrestricted ? .host : NetworkMode.none))
        #expect(policy.environment.isEmpty)
        #expect(policy.origin == level.rawValue)
    }

    @Test func builtInPolicyFilesAreExactlyOnePerLevel() {
        let files = directoryEntries(builtInPoliciesDirectory).filter { $0.hasSuffix(".toml") }
        #expect(files == Level.allCases.map { "\($0.rawValue).toml" }.sorted())
    }

    @Test(arguments: directoryEntries(builtInPoliciesDirectory).filter { $0.hasSuffix(".toml") })
    func everyBuiltInFileLoadsAtTheLevelItsNameSays(name: String) throws {
        let path = "\(builtInPoliciesDirectory)/\(name)"
        let policy = try PolicyLoader.load(path)
        let level = try #require(Level(rawValue: String(name.dropLast(".toml".count))))
        #expect(policy.level == level)
        #expect(policy.origin == path)
        #expect(policy.network == (level == .unrestricted ? .host : NetworkMode.none))
        // The built-in files spell out the defaults, so they mean the same as the bare level name.
        #expect(policy.limits == (try PolicyLoader.load(level.rawValue)).limits)
        // The file is the built-in policy of its level, apart from where it came from.
        var builtin = try PolicyLoader.load(level.rawValue)
        builtin.origin = path
        #expect(policy == builtin)
        // Parsing the text gives the same policy as loading the file.
        let text = try #require(readText(path))
        #expect(try PolicyLoader.parse(text, file: path) == policy)
    }

    @Test func sandboxByNameAndByFileGiveEqualLimits() throws {
        let byName = try PolicyLoader.load("sandbox")
        let byFile = try PolicyLoader.load(builtInPoliciesDirectory + "/sandbox.toml")
        #expect(byName.limits == byFile.limits)
        #expect(byName.level == byFile.level)
        #expect(byName.network == byFile.network)
        #expect(byName.origin == "sandbox")
        #expect(byFile.origin == builtInPoliciesDirectory + "/sandbox.toml")
    }

    @Test func repositoryRootIsFoundFromFilePath() {
        #expect(repositoryRoot.hasPrefix("/"))
        #expect(!repositoryRoot.hasSuffix("/"))
        #expect(readText(repositoryRoot + "/Package.swift") != nil)
    }
}

@Suite struct BuiltinPolicyTextTests {
    @Test(arguments: Level.allCases)
    func compiledInTextIsTheFile(level: Level) throws {
        // `--policy LEVEL` uses the compiled-in copy (settings only, without comment and blank
        // lines); run scripts/gen-builtin-policies after an edit.
        let text = try #require(readText("\(builtInPoliciesDirectory)/\(level.rawValue).toml"))
        let settings = text.split(separator: "\n").filter { line in
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            return !trimmed.isEmpty && !trimmed.hasPrefix("#")
        }
        #expect(BuiltinPolicies.text(level) == settings.joined(separator: "\n"))
    }
}
