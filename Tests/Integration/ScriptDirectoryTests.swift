// A script run with `capsule run` behaves as under CPython where its own code is concerned: its
// `__file__` is absolute, its directory leads sys.path, the modules and packages beside it import;
// what else lies beside it stays out of reach.
#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import Testing

@Suite struct ScriptDirectoryTests {
    @Test func aScriptImportsItsNeighboursAndReadsItselfButNothingElseBesideIt() throws {
        try OS.makeDirectories("/var/lib/capsule-tests")
        var template = Array("/var/lib/capsule-tests/job-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: errno) }
        let root = String(cString: made)
        defer { try? OS.removeTree(root) }
        chmod(root, 0o755)
        try OS.makeDirectories(root + "/pkg")
        try Host.writeFile(root + "/helper.py", "GREETING = 'hello from helper'\n")
        try Host.writeFile(root + "/pkg/__init__.py", "from .inner import VALUE\n")
        try Host.writeFile(root + "/pkg/inner.py", "VALUE = 42\n")
        try Host.writeFile(root + "/.env", "TOKEN=secret\n")
        try Host.writeFile(root + "/job.py", """
            import os, sys
            import helper, pkg
            print(helper.GREETING, pkg.VALUE)
            print(__file__ == \(String(reflecting: root + "/job.py")), sys.argv[0] == __file__, sys.path[0] == os.path.dirname(__file__))
            print(open(__file__).readline().strip())
            for name in ('.env', 'job.py.bak'):
                try:
                    open(os.path.join(os.path.dirname(__file__), name))
                except OSError as e:
                    print(name, 'unreachable', e.errno)
            try:
                open(helper.__file__, 'a')
            except OSError as e:
                print('helper.py read-only', e.errno in (13, 30))
            """)
        for name in ["helper.py", "pkg/__init__.py", "pkg/inner.py", ".env", "job.py"] { chmod(root + "/" + name, 0o644) }
        let run = try CLI.run(["run", "--policy", "sandbox", root + "/job.py"])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == """
            hello from helper 42
            True True True
            import os, sys
            .env unreachable 2
            job.py.bak unreachable 2
            helper.py read-only True

            """, "\(run)")
        #expect(!run.stderr.contains("note"), "\(run.stderr)")
    }
}
