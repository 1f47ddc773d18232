// `--mount` and `[sandbox] mounts`: a host tree shown read-only where the policy says, and
// `capsule run -m MODULE` (a test runner run as python3 -m runs it).
#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import Testing

/// A fresh directory outside the socket directories, readable by the sandbox's unmapped uid.
func hostTree(_ files: [String: String]) throws -> String {
    try OS.makeDirectories("/var/lib/capsule-tests")
    var template = Array("/var/lib/capsule-tests/tree-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: errno) }
    let root = String(cString: made)
    chmod(root, 0o755)
    for (name, text) in files {
        if let slash = name.lastIndex(of: "/") {
            try OS.makeDirectories(root + "/" + name[..<slash])
            chmod(root + "/" + name[..<slash], 0o755)
        }
        try Host.writeFile(root + "/" + name, text)
        chmod(root + "/" + name, 0o644)
    }
    return root
}

@Suite struct MountTests {
    @Test func aMountIsReadableWhereItIsMountedAndNotWritable() throws {
        let tree = try hostTree(["data/in.txt": "host data\n", "job.py": """
            import os
            print(sorted(os.listdir('/src')), open('/src/data/in.txt').read().strip())
            for path in ('/src/data/in.txt', '/src/new.txt'):
                try:
                    open(path, 'a').write('x')
                except OSError as e:
                    print(path, 'refused', e.errno in (13, 30))
            """])
        defer { try? OS.removeTree(tree) }
        let run = try CLI.run(["run", "--policy", "restricted", "--mount", "\(tree):/src:ro", tree + "/job.py"])
        #expect(run.status == 0 && run.stdout == """
            ['data', 'job.py'] host data
            /src/data/in.txt refused True
            /src/new.txt refused True

            """, "\(run)")
        #expect(try Host.readFile(tree + "/data/in.txt") == "host data\n")
        #expect(!OS.fileExists(tree + "/new.txt"))

        // In a policy file too, and inside /workspace, which stays writable around it.
        try Host.writeFile(tree + "/p.toml", "level = \"restricted\"\n[sandbox]\nmounts = [\"\(tree)/data:/workspace/data\"]\n")
        try Host.writeFile(tree + "/ws.py", "open('/workspace/out.txt', 'w').write('ok')\nprint(open('/workspace/data/in.txt').read().strip(), open('/workspace/out.txt').read())\n")
        chmod(tree + "/ws.py", 0o644)
        let inWorkspace = try CLI.run(["run", "--policy", tree + "/p.toml", tree + "/ws.py"])
        #expect(inWorkspace.status == 0 && inWorkspace.stdout == "host data ok\n", "\(inWorkspace)")
    }

    @Test func mountsTheSandboxCannotHonourAreRefusedBeforeAnythingRuns() throws {
        let tree = try hostTree(["job.py": "print('ran')\n"])
        defer { try? OS.removeTree(tree) }
        let link = tree + "-link"
        #expect(symlink(tree, link) == 0)
        defer { unlink(link) }
        let cases: [([String], String)] = [
            (["--mount", "\(tree):/src"], "--mount needs level `restricted` or higher; the policy sandbox is `sandbox`"),
            (["--policy", "restricted", "--mount", "\(link):/src"], "a mount's host path contains a symbolic link (\(link))"),
            (["--policy", "restricted", "--mount", "\(tree):/usr/share/zoneinfo/x"], "a mount's destination (/usr/share/zoneinfo/x) is over or inside a path the sandbox's runtime already holds"),
            (["--policy", "restricted", "--mount", "\(tree)/missing:/src"], "a mount's host path is not usable"),
            (["--policy", "restricted", "--mount", "\(tree):/src:rw"], "--mount HOST:DEST:rw needs level `standard` or higher; the policy restricted is `restricted`"),
        ]
        for (options, message) in cases {
            let run = try CLI.run(["run"] + options + [tree + "/job.py"])
            #expect(run.status == 125 && run.stderr.contains(message) && !run.stdout.contains("ran"), "\(options): \(run)")
        }
    }

    @Test func aModuleRunsAsPython3DashMRunsIt() throws {
        let run = try CLI.run(["run", "-m", "calendar", "2026", "12"])
        #expect(run.status == 0 && run.stdout.contains("   December 2026") && run.stdout.contains("Mo Tu We Th Fr Sa Su"), "\(run)")
        let argv = try CLI.run(["run", "--policy", "sandbox", "-m", "json.tool", "--help"])
        #expect(argv.status == 0 && argv.stdout.contains("usage: python -m json.tool"), "the module's own options reach it: \(argv)")
        let missing = try CLI.run(["run", "-m", "no_such_module"])
        #expect(missing.status == 1 && missing.stderr.contains("No module named no_such_module"), "\(missing)")
        let bad = try CLI.run(["run", "-m", "not a module"])
        #expect(bad.status == 64 && bad.stderr.contains("-m takes a module's dotted name"), "\(bad)")
    }
}
