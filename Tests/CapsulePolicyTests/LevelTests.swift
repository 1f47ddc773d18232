import Testing
@testable import CapsulePolicy

@Suite struct LevelTests {
    @Test func levelsAreOrderedFromTightestToLoosest() {
        #expect(Level.sandbox < .unrestricted)
        #expect(!(Level.unrestricted < .sandbox))
        #expect(!(Level.standard < .standard))
        #expect(Level.sandbox < .restricted && Level.restricted < .standard)
        #expect(Level.standard < .trusted && Level.trusted < .unrestricted)
        #expect(Level.allCases == [.sandbox, .restricted, .standard, .trusted, .unrestricted])
        #expect(Level.allCases.reversed().sorted() == Level.allCases)
        #expect(Level.allCases.min() == .sandbox)
        #expect(Level.allCases.max() == .unrestricted)
        #expect(Level.trusted >= .standard)
    }

    @Test func levelNamesAreTheLowercaseCaseNames() {
        #expect(Level.allCases.map(\.rawValue) == ["sandbox", "restricted", "standard", "trusted", "unrestricted"])
        #expect(Level(rawValue: "Sandbox") == nil)
        #expect(Level(rawValue: " sandbox") == nil)
        #expect(Level(rawValue: "") == nil)
    }

    @Test func limitsDefaults() {
        let limits = Limits()
        #expect(limits.memoryMB == 512)
        #expect(limits.cpuSeconds == 60)
        #expect(limits.timeoutSeconds == 30)
        #expect(limits.maxFDs == 100)
        #expect(limits.maxProcesses == 64)
        #expect(limits.maxOutputBytes == 16_777_216)
        #expect(limits.maxFileBytes == 64 << 20)
        #expect(limits.workspaceMB == 64)
        #expect(limits.maxFrameBytes == 16_777_216)
    }

    @Test(arguments: Level.allCases)
    func policyDefaultsFollowTheLevel(level: Level) {
        let policy = Policy(level: level)
        #expect(policy.level == level)
        #expect(policy.limits == Limits())
        #expect(policy.network == (level == .unrestricted ? .host : NetworkMode.none))
        #expect(policy.environment.isEmpty)
        #expect(policy.origin == level.rawValue)
    }

    @Test func policyInitializerKeepsExplicitValues() {
        var limits = Limits()
        limits.memoryMB = 64
        let policy = Policy(level: .sandbox, limits: limits, network: .host, environment: ["A": "1"], origin: "x.toml")
        #expect(policy.network == .host)
        #expect(policy.limits.memoryMB == 64)
        #expect(policy.environment == ["A": "1"])
        #expect(policy.origin == "x.toml")
        #expect(Policy(level: .unrestricted, network: NetworkMode.none).network == NetworkMode.none)
        #expect(Policy(level: .sandbox) != Policy(level: .sandbox, origin: "other"))
    }
}
