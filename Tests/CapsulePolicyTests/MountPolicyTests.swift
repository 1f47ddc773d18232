// [sandbox] mounts and `capsule run --mount`: host paths shown read-only where the policy says.
import Testing
@testable import CapsulePolicy

@Suite struct MountPolicyTests {
    @Test func mountsAreReadAndShown() throws {
        let policy = try PolicyLoader.parse("""
            level = "restricted"
            [sandbox]
            mounts = ["/srv/repo:/src", "/srv/data:/workspace/data:ro"]
            """, file: "p.toml")
        #expect(policy.mounts == [Mount(host: "/srv/repo", destination: "/src"), Mount(host: "/srv/data", destination: "/workspace/data")])
        #expect(policy.settings.contains { $0.key == "mounts" && $0.value == "[\"/srv/repo:/src\", \"/srv/data:/workspace/data\"]" })
        #expect(policy.explanation.contains("read these host paths where they are mounted (read-only): /srv/repo at /src, /srv/data at /workspace/data"))
    }

    @Test func aWritableMountNeedsStandardAndIsShownAsWritable() throws {
        let policy = try PolicyLoader.parse("""
            level = "standard"
            [sandbox]
            mounts = ["/srv/repo:/src:rw", "/srv/data:/data"]
            """, file: "p.toml")
        #expect(policy.mounts == [Mount(host: "/srv/repo", destination: "/src", writable: true), Mount(host: "/srv/data", destination: "/data")])
        #expect(policy.settings.contains { $0.key == "mounts" && $0.value == "[\"/srv/repo:/src:rw\", \"/srv/data:/data\"]" })
        #expect(policy.explanation.contains("read these host paths where they are mounted (read-only): /srv/data at /data"))
        #expect(policy.explanation.contains("read and write these host paths where they are mounted, as their owners: /srv/repo at /src"))
    }

    @Test func aPolicyThatExtendsAnotherWritesOnlyWhereItsBaseWrites() throws {
        try withTemporaryDirectory("mounts") { dir throws in
            _ = dir.write("base.toml", "level = \"standard\"\n[sandbox]\nmounts = [\"/srv/repo:/src:rw\", \"/srv/data:/data\"]\n")
            let narrower = dir.write("narrower.toml", "extends = \"base.toml\"\n[sandbox]\nmounts = [\"/srv/repo/sub:/src:rw\", \"/srv/data:/data\"]\n")
            #expect(try PolicyLoader.load(narrower).mounts.first == Mount(host: "/srv/repo/sub", destination: "/src", writable: true))
            let readOnly = dir.write("ro.toml", "extends = \"base.toml\"\n[sandbox]\nmounts = [\"/srv/repo:/src\"]\n")
            #expect(try PolicyLoader.load(readOnly).mounts == [Mount(host: "/srv/repo", destination: "/src")])
            let wider = dir.write("wider.toml", "extends = \"base.toml\"\n[sandbox]\nmounts = [\"/srv/data:/data:rw\"]\n")
            #expect(loadError(wider)?.description == "\(wider):3: `sandbox.mounts`: `/srv/data:/data:rw` writes where it allows no :rw mount; a policy that extends `\(dir.path)/base.toml` may only narrow it")
        }
    }

    @Test(arguments: [
        ("level = \"sandbox\"\n[sandbox]\nmounts = [\"/srv/repo:/src\"]",
         "p.toml:3: `sandbox.mounts`: needs level `restricted` or higher; this policy is `sandbox`"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"/srv/data:/data\", \"/srv/repo:/src:rw\"]",
         "p.toml:3: `sandbox.mounts (/srv/repo:/src:rw)`: needs level `standard` or higher; this policy is `restricted`"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"/srv/repo:/src:rx\"]",
         "p.toml:3: `sandbox.mounts`: `/srv/repo:/src:rx`: the mode after the second `:` is `ro` or `rw`, not `rx`"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"/srv/repo\"]",
         "p.toml:3: `sandbox.mounts`: `/srv/repo` is not HOST:DEST, HOST:DEST:ro or HOST:DEST:rw, like /srv/repo:/src:ro (paths hold no `:`)"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"repo:/src\"]",
         "p.toml:3: `sandbox.mounts`: `repo:/src`: `repo` must be an absolute path without `.` or `..` parts or control characters"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"/run/docker:/src\"]",
         "p.toml:3: `sandbox.mounts`: `/run/docker:/src`: `/run/docker` overlaps /run, where hosts keep unix sockets a read-only bind would not keep the code from connecting to"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"/srv/repo:/proc/x\"]",
         "p.toml:3: `sandbox.mounts`: `/srv/repo:/proc/x`: `/proc/x` is part of the sandbox's own layout; mount at a path of your own, such as /src or /workspace/src"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"/srv/repo:/\"]",
         "p.toml:3: `sandbox.mounts`: `/srv/repo:/`: `/` is part of the sandbox's own layout; mount at a path of your own, such as /src or /workspace/src"),
        ("level = \"restricted\"\n[sandbox]\nmounts = [\"/srv/repo:/workspace\"]",
         "p.toml:3: `sandbox.mounts`: `/srv/repo:/workspace`: `/workspace` is part of the sandbox's own layout; mount at a path of your own, such as /src or /workspace/src"),
        ("extends = \"restricted\"\n[sandbox]\nmounts = [\"/srv/repo:/src\"]",
         "p.toml:3: `sandbox.mounts`: `/srv/repo` is not under a path it allows (its readonly_paths or mounts); a policy that extends `restricted` may only narrow it"),
    ])
    func badMountsAreNamed(_ text: String, _ message: String) {
        #expect(parseError(text)?.description == message)
    }

    @Test func theCommandLineAddsMountsUnderTheSameRules() throws {
        let restricted = Policy(level: .restricted)
        let added = try restricted.adding(mounts: ["repo:/src", "/srv/data:/data:ro"], workingDirectory: "/srv")
        #expect(added.mounts == [Mount(host: "/srv/repo", destination: "/src"), Mount(host: "/srv/data", destination: "/data")])
        #expect(try restricted.adding(mounts: [], workingDirectory: "/") == restricted)
        #expect(throws: MountProblem("--mount needs level `restricted` or higher; the policy sandbox is `sandbox` (--policy restricted, or a policy of your own at that level)")) {
            _ = try Policy(level: .sandbox).adding(mounts: ["/srv:/src"], workingDirectory: "/")
        }
        #expect(throws: MountProblem("--mount HOST:DEST:rw needs level `standard` or higher; the policy restricted is `restricted` (--policy standard, or a policy of your own at that level)")) {
            _ = try restricted.adding(mounts: ["/srv/repo:/src:rw"], workingDirectory: "/")
        }
        let standard = try Policy(level: .standard).adding(mounts: ["repo:/src:rw"], workingDirectory: "/srv")
        #expect(standard.mounts == [Mount(host: "/srv/repo", destination: "/src", writable: true)])
        #expect(throws: MountProblem("--mount `/tmp/x:/src`: `/tmp/x` overlaps /tmp, where hosts keep unix sockets a read-only bind would not keep the code from connecting to")) {
            _ = try restricted.adding(mounts: ["/tmp/x:/src"], workingDirectory: "/")
        }
    }
}
