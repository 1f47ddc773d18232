// [audit]: where the audit log goes, checked like every other table.
import Testing
@testable import CapsulePolicy

@Suite struct AuditPolicyTests {
    @Test func theTableIsReadShownAndExplained() throws {
        let policy = try PolicyLoader.parse("""
            level = "sandbox"
            [audit]
            path = "/var/log/capsule/audit.jsonl"
            fsync = "always"
            key_file = "/etc/capsule/audit.key"
            rotate_mb = 64
            """, file: "p.toml")
        #expect(policy.audit == AuditSettings(path: "/var/log/capsule/audit.jsonl", fsync: .always, keyFile: "/etc/capsule/audit.key", rotateMB: 64))
        #expect(try PolicyLoader.parse(policy.tomlText, file: "shown.toml").audit == policy.audit)
        #expect(policy.explanation.contains("every session, execution and capability call is logged to /var/log/capsule/audit.jsonl (fsync always, HMAC-keyed, a new file every 64 MiB)"))
        // Defaults: batch, no key, no rotation; no table, no audit.
        #expect(try PolicyLoader.parse("level = \"sandbox\"\n[audit]\npath = \"/a.jsonl\"\n", file: "p.toml").audit == AuditSettings(path: "/a.jsonl"))
        #expect(try PolicyLoader.parse("level = \"sandbox\"\n", file: "p.toml").audit == nil)
    }

    @Test(arguments: [
        ("path = \"audit.jsonl\"", "p.toml:3: `audit.path`: `audit.jsonl` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\""),
        ("fsync = \"sometimes\"", "p.toml:3: `audit.fsync`: must be \"always\", \"batch\" or \"never\", not \"sometimes\""),
        ("rotate_mb = 0", "p.toml:3: `audit.rotate_mb`: must be a whole number from 1 to 1048576, not 0"),
        ("fsyn = \"always\"", "p.toml:3: `audit.fsyn`: unknown key; did you mean `audit.fsync`?"),
        ("enabled = false", "p.toml:3: `audit.enabled`: auditing cannot be switched off: a policy with an [audit] table (or one extending it) is audited; use a policy without [audit] and no --audit to run unaudited"),
    ])
    func badKeysAreNamed(line: String, message: String) throws {
        #expect(parseError("level = \"sandbox\"\n[audit]\n\(line)\n")?.all.map(\.description) == [message])
    }

    @Test func aPolicyExtendingAnAuditedOneStaysAudited() throws {
        try withTemporaryDirectory("audit-extends") { directory in
            directory.write("base.toml", "level = \"standard\"\n[audit]\npath = \"/var/log/a.jsonl\"\n")
            let child = directory.write("child.toml", "extends = \"base.toml\"\nlevel = \"restricted\"\n")
            let loaded = try PolicyLoader.load(child)
            #expect(loaded.audit?.path == "/var/log/a.jsonl")
            let off = directory.write("off.toml", "extends = \"base.toml\"\n[audit]\nenabled = false\n")
            #expect(throws: PolicyError.self) { try PolicyLoader.load(off) }
            // Nor redirected or weakened: /dev/null, another file, a weaker fsync.
            let elsewhere = directory.write("elsewhere.toml", "extends = \"base.toml\"\n[audit]\npath = \"/dev/null\"\nfsync = \"never\"\n")
            let problems = PolicyLoader.problems(elsewhere).map(\.description)
            #expect(problems.count == 2, "\(problems)")
            #expect(problems.first?.hasSuffix("`audit.path`: the log must stay /var/log/a.jsonl; a policy that extends `\(directory.path)/base.toml` may only narrow it") == true, "\(problems)")
            #expect(problems.last?.contains("`audit.fsync`: \"never\" is weaker than the \"batch\" it sets") == true, "\(problems)")
        }
    }
}
