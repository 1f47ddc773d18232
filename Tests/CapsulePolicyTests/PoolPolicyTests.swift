// [pool]: how many sessions a warm pool keeps, checked like every other table.
import Testing
@testable import CapsulePolicy

@Suite struct PoolPolicyTests {
    @Test func theTableSetsTheSettingsAndShowPrintsThem() throws {
        let policy = try PolicyLoader.parse("level = \"sandbox\"\n[pool]\nmin_idle = 4\nmax = 50\n", file: "p.toml")
        #expect(policy.pool == PoolSettings(minIdle: 4, max: 50))
        #expect(policy.settings.filter { $0.table == "pool" }.map { "\($0.key) = \($0.value)" } == ["min_idle = 4", "max = 50"])
        // Without the table, nothing is shown and a pool keeps the defaults.
        let plain = try PolicyLoader.parse("level = \"sandbox\"\n", file: "p.toml")
        #expect(plain.pool == nil && !plain.settings.contains { $0.table == "pool" })
        #expect(PoolSettings() == PoolSettings(minIdle: 2, max: 10))
    }

    @Test func badValuesAreNamed() {
        let tooMany = parseError("level = \"sandbox\"\n[pool]\nmax = 2\nmin_idle = 5\n")
        #expect(tooMany?.line == 4 && tooMany?.message.contains("min_idle (5) is more than max (2)") == true, "\(String(describing: tooMany))")
        let zero = parseError("level = \"sandbox\"\n[pool]\nmax = 0\n")
        #expect(zero?.key == "pool.max" && zero?.line == 3, "\(String(describing: zero))")
        let word = parseError("level = \"sandbox\"\n[pool]\nmin_idle = \"two\"\n")
        #expect(word?.key == "pool.min_idle", "\(String(describing: word))")
        let typo = parseError("level = \"sandbox\"\n[pool]\nmin_idel = 3\n")
        #expect(typo?.message.contains("pool.min_idle") == true, "\(String(describing: typo))")
        let table = parseError("level = \"sandbox\"\n[pools]\n")
        #expect(table?.message.contains("pool") == true, "\(String(describing: table))")
    }
}
