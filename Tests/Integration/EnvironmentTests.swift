// Packages the code imports: `capsule env` environments and `[sandbox] python_path`, and the
// notebook behaviour data-science code expects (rich results, matplotlib figures as displays).
#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox
import Testing

/// Everything an execution produced, results and displays included.
private struct Rich {
    var stdout = "", stderr = ""
    var results: [[String: String]] = []
    var displays: [[String: String]] = []
    var errors: [String] = []
    var outcome: ExecutionOutcome?

    static func run(_ code: String, in session: Session, wantResult: Bool = true) -> Rich {
        var rich = Rich()
        rich.outcome = session.execute(code, wantResult: wantResult) { event in
            switch event {
            case .stream(.stdout, let text): rich.stdout += text
            case .stream(.stderr, let text): rich.stderr += text
            case .streamData(.stdout, let bytes): rich.stdout += String(decoding: bytes, as: UTF8.self)
            case .streamData(.stderr, let bytes): rich.stderr += String(decoding: bytes, as: UTF8.self)
            case .result(let data): rich.results.append(data)
            case .display(let data): rich.displays.append(data)
            case .error(let name, let value, let traceback): rich.errors.append("\(name): \(value)\n\(traceback.joined())")
            case .inputRequest, .inputRefused, .approvalRequest: break
            }
            return nil
        }
        return rich
    }

    var finishedCleanly: Bool {
        if case .finished(.ok, nil, _, nil) = outcome { return errors.isEmpty }
        return false
    }
}

/// A store in a fresh directory holding one environment made by hand, as pip would leave it:
/// a package, a module on a .pth file's extra directory, and the metadata written last.
private func handMadeStore() throws -> (store: EnvironmentStore, root: String) {
    let root = try Host.temporaryDirectory()
    chmod(root, 0o755)
    let store = EnvironmentStore(root: root + "/envs")
    let packages = store.sitePackages(of: "greet")
    try OS.makeDirectories(packages + "/greet")
    try OS.makeDirectories(packages + "/greet_extra")
    try Host.writeFile(packages + "/greet/__init__.py", "def hello():\n    return 'hello from greet'\n")
    try Host.writeFile(packages + "/greet_extra/extra_mod.py", "WHERE = 'found through a .pth file'\n")
    try Host.writeFile(packages + "/greet-paths.pth", "# a comment\ngreet_extra\n")
    try Host.writeFile(store.metadataFile(of: "greet"), "{\"name\": \"greet\", \"python\": \"3.11\", \"libraries\": [\"libz.so.1\", \"../etc/passwd\"]}\n")
    return (store, root)
}

private func treeRemoved(_ path: String) { try? OS.removeTree(path) }

/// A session whose `sandbox` policy names `environment` in `store`.
private func sessionNaming(_ environment: String, in store: EnvironmentStore) throws -> Session {
    var location = try Sandboxed.location()
    location.environments = store
    var policy = Policy(level: .sandbox)
    policy.pythonEnvironment = environment
    return try Session(policy: policy, location: location)
}

@Suite struct EnvironmentTests {
    @Test func anEnvironmentsPackagesImportReadOnlyFromAPathThatNamesNoHostDirectory() throws {
        let (store, root) = try handMadeStore()
        defer { treeRemoved(root) }
        let session = try sessionNaming("greet", in: store)
        defer { session.shutdown(grace: 1) }
        let run = Rich.run("""
            import sys, greet, extra_mod
            print(greet.hello())
            print(greet.__file__)
            print(extra_mod.WHERE)
            print([p for p in sys.path if 'greet' in p or p == '/workspace'])
            print(any(\(String(reflecting: root)) in p for p in sys.path))
            try:
                open(greet.__file__, 'a').write('# changed')
            except OSError as e:
                print('write refused', e.errno in (13, 30))  # EACCES or EROFS
            """, in: session, wantResult: false)
        #expect(run.finishedCleanly, "\(run)")
        #expect(run.stdout == """
            hello from greet
            /opt/capsule/envs/greet/site-packages/greet/__init__.py
            found through a .pth file
            ['/opt/capsule/envs/greet/site-packages', '/workspace', '/opt/capsule/envs/greet/site-packages/greet_extra']
            False
            write refused True

            """, "\(run)")
        #expect(try Host.readFile(store.sitePackages(of: "greet") + "/greet/__init__.py").hasSuffix("'hello from greet'\n"))
    }

    @Test func anEnvironmentThatIsNotThereIsNamedWithHowToMakeIt() throws {
        let (store, root) = try handMadeStore()
        defer { treeRemoved(root) }
        #expect {
            _ = try sessionNaming("science", in: store)
        } throws: { error in
            "\(error)".contains("the policy's [sandbox] environment `science` does not exist (environments live in \(store.root)); "
                                + "make it with `capsule env create science -r requirements.txt`, or name one that exists: greet")
        }
        Sandboxed.expectNewSessionWorks()
    }

    /// Hostile: an environment's directory replaced by a link to the host's /etc would hand the
    /// code the host's files at a `sandbox` level; it is refused, not followed.
    @Test func anEnvironmentLinkedElsewhereIsRefused() throws {
        let (store, root) = try handMadeStore()
        defer { treeRemoved(root) }
        try OS.removeTree(store.sitePackages(of: "greet"))
        #expect(symlink("/etc", store.sitePackages(of: "greet")) == 0)
        #expect {
            _ = try sessionNaming("greet", in: store)
        } throws: { error in
            "\(error)".contains("environment `greet` cannot be used: \(store.sitePackages(of: "greet")) is a symbolic link")
        }
    }

    @Test func pythonPathDirectoriesComeAfterTheStandardLibraryAndStayReadOnly() throws {
        let directory = try Host.temporaryDirectory()
        defer { treeRemoved(directory) }
        chmod(directory, 0o755)
        try Host.writeFile(directory + "/helper.py", "def twice(x):\n    return 2 * x\n")
        try Host.writeFile(directory + "/json.py", "raise SystemExit('the stdlib was shadowed')\n")
        chmod(directory + "/helper.py", 0o644)
        chmod(directory + "/json.py", 0o644)
        var policy = Policy(level: .restricted)
        policy.pythonPath = [directory]
        let session = try Session(policy: policy, location: try Sandboxed.location())
        defer { session.shutdown(grace: 1) }
        let run = Rich.run("""
            import sys, json, helper
            print(helper.twice(21), json.dumps([1]))
            print(sys.path.index(\(String(reflecting: directory))) < sys.path.index('/workspace'))
            try:
                open(\(String(reflecting: directory + "/new.py")), 'w')
            except OSError as e:
                print('create refused', e.errno in (13, 30))  # EACCES or EROFS
            """, in: session, wantResult: false)
        #expect(run.finishedCleanly && run.stdout == "42 [1]\nTrue\ncreate refused True\n", "\(run)")
        #expect(!OS.fileExists(directory + "/new.py"))
    }

    @Test func aPythonPathEntryThatIsAFileIsRefusedClearly() throws {
        let directory = try Host.temporaryDirectory()
        defer { treeRemoved(directory) }
        try Host.writeFile(directory + "/helper.py", "x = 1\n")
        var policy = Policy(level: .restricted)
        policy.pythonPath = [directory + "/helper.py"]
        #expect {
            _ = try Session(policy: policy, location: try Sandboxed.location())
        } throws: { error in
            "\(error)".contains("a python_path entry named by the policy is not a directory (\(directory)/helper.py)")
        }
    }
}

// MARK: The command line: `capsule env` with pip, offline (a wheel made here) and from PyPI

/// A wheel of a small pure-Python distribution, written with the host's python3 (trusted code of
/// the test's own, run outside the sandbox): pip installs it without reaching an index.
private func buildWheel(in directory: String) throws -> String {
    let wheel = directory + "/greet-1.0-py3-none-any.whl"
    let script = """
        import sys, zipfile
        files = {
            "greet/__init__.py": "def hello():\\n    return 'hello from a wheel'\\n",
            "greet-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: greet\\nVersion: 1.0\\n",
            "greet-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: capsule-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        }
        files["greet-1.0.dist-info/RECORD"] = "".join(f"{name},,\\n" for name in files) + "greet-1.0.dist-info/RECORD,,\\n"
        with zipfile.ZipFile(sys.argv[1], "w") as z:
            for name, text in files.items():
                z.writestr(name, text)
        """
    let status = Host.spawnAndWait("/usr/bin/python3", ["-c", script, wheel])
    guard status == 0 else { throw SystemError("building the test wheel", errno: EIO) }
    return wheel
}

@Suite(.serialized) struct EnvironmentCommandTests {
    // Each runs pip, for up to half a minute: on a thread of its own.
    @Test func createListShowRunAndRemove() async throws { try await onOwnThread(Self.createListShowRunAndRemove) }
    @Test func whatPipCannotInstallLeavesNothingBehind() async throws { try await onOwnThread(Self.whatPipCannotInstallLeavesNothingBehind) }
    @Test func dataScienceCodeRunsAsInANotebook() async throws { try await onOwnThread(Self.dataScienceCodeRunsAsInANotebook) }
    @Test func aMountedTestSuiteRunsUnderPytest() async throws { try await onOwnThread(Self.aMountedTestSuiteRunsUnderPytest) }

    /// A CI job: an untrusted repository's tests, mounted read-only, run by pytest from an
    /// environment (from PyPI, where pip can reach it; skipped loudly otherwise).
    @Sendable static func aMountedTestSuiteRunsUnderPytest() throws {
        let data = try Host.temporaryDirectory()
        defer { treeRemoved(data) }
        chmod(data, 0o755)
        let env = ["XDG_DATA_HOME=\(data)/share", "HOME=\(OS.environment("HOME") ?? data)", "PATH=/usr/bin:/bin"]
        let created = try CLI.run(["env", "create", "testing", "pytest"], timeout: 300, environment: env)
        guard created.status == 0 else {
            print("SKIPPED aMountedTestSuiteRunsUnderPytest: pip could not install pytest here:\n\(created.stderr.suffix(2000))")
            return
        }
        try OS.makeDirectories("/var/lib/capsule-tests")
        var template = Array("/var/lib/capsule-tests/repo-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: errno) }
        let repo = String(cString: made)
        defer { treeRemoved(repo) }
        try OS.makeDirectories(repo + "/tests")
        for path in [repo, repo + "/tests"] { chmod(path, 0o755) }
        try Host.writeFile(repo + "/tests/test_job.py", "def test_adds():\n    assert 1 + 1 == 2\n\ndef test_fails():\n    assert 'a' == 'b'\n")
        // A test that starts the interpreter again, as CLI tools' suites do; the child imports
        // from the environment too.
        try Host.writeFile(repo + "/tests/test_cli.py", """
            import subprocess, sys
            def test_child_python():
                done = subprocess.run([sys.executable, "-c", "import pytest, sys; print(sys.version_info[0])"], capture_output=True, text=True)
                assert (done.returncode, done.stdout) == (0, "3\\n"), done.stderr
            """)
        for file in ["test_job.py", "test_cli.py"] { chmod(repo + "/tests/" + file, 0o644) }
        let ci = "level = \"restricted\"\n[sandbox]\nenvironment = \"testing\"\nmounts = [\"\(repo):/src\"]\n"
        try Host.writeFile(data + "/ci.toml", ci + "python_subprocess = true\n")
        try Host.writeFile(data + "/no-subprocess.toml", ci)
        let pytest = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "/src"]
        let run = try CLI.run(["run", "--policy", data + "/ci.toml"] + pytest, timeout: 120, environment: env)
        #expect(run.status == 1 && run.stdout.contains("1 failed, 2 passed"), "\(run)")
        #expect(run.stdout.contains("assert 'a' == 'b'"), "\(run)")
        let refused = try CLI.run(["run", "--policy", data + "/no-subprocess.toml"] + pytest, timeout: 120, environment: env)
        #expect(refused.status == 1 && refused.stdout.contains("2 failed, 1 passed"), "\(refused)")
        #expect(refused.stdout.contains("PermissionError: [Errno 1] capsule: programs cannot be started inside the sandbox")
                && refused.stdout.contains("[sandbox] python_subprocess = true"), "\(refused)")
    }

    @Sendable static func createListShowRunAndRemove() throws {
        let data = try Host.temporaryDirectory()
        defer { treeRemoved(data) }
        chmod(data, 0o755)
        let wheel = try buildWheel(in: data)
        let env = ["XDG_DATA_HOME=\(data)/share", "HOME=\(data)", "PATH=/usr/bin:/bin"]

        let created = try CLI.run(["env", "create", "greet", wheel], timeout: 300, environment: env)
        #expect(created.status == 0, "\(created)")
        #expect(created.stdout.contains("capsule: environment greet is ready: 1 distribution for Python 3.11."), "\(created)")
        let again = try CLI.run(["env", "create", "greet", wheel], environment: env)
        #expect(again.status == ExitStatus.capsuleError && again.stderr.contains("the environment greet exists already"), "\(again)")

        let listed = try CLI.run(["env", "list"], environment: env)
        #expect(listed.status == 0 && listed.stdout.contains("greet  3.11    1"), "\(listed)")
        let shown = try CLI.run(["env", "show", "greet"], environment: env)
        #expect(shown.status == 0 && shown.stdout.contains("in sandbox    /opt/capsule/envs/greet/site-packages")
                && shown.stdout.contains("  greet 1.0"), "\(shown)")

        try Host.writeFile(data + "/p.toml", "level = \"sandbox\"\n[sandbox]\nenvironment = \"greet\"\n")
        try Host.writeFile(data + "/job.py", "import greet\nprint(greet.hello())\n")
        let ran = try CLI.run(["run", "--policy", data + "/p.toml", data + "/job.py"], environment: env)
        #expect(ran.status == 0 && ran.stdout == "hello from a wheel\n", "\(ran)")

        let removed = try CLI.run(["env", "rm", "greet"], environment: env)
        #expect(removed.status == 0 && !OS.fileExists(data + "/share/capsule/envs/greet"), "\(removed)")
        let gone = try CLI.run(["run", "--policy", data + "/p.toml", data + "/job.py"], environment: env)
        #expect(gone.status == ExitStatus.capsuleError && gone.stderr.contains("environment `greet` does not exist"), "\(gone)")
        let empty = try CLI.run(["env", "list"], environment: env)
        #expect(empty.stdout.contains("no environments in \(data)/share/capsule/envs"), "\(empty)")
    }

    @Sendable static func whatPipCannotInstallLeavesNothingBehind() throws {
        let data = try Host.temporaryDirectory()
        defer { treeRemoved(data) }
        let env = ["XDG_DATA_HOME=\(data)/share", "HOME=\(data)", "PATH=/usr/bin:/bin"]
        let failed = try CLI.run(["env", "create", "broken", data + "/no-such-1.0-py3-none-any.whl"], timeout: 120, environment: env)
        #expect(failed.status != 0 && failed.stderr.contains("pip failed (exit status"), "\(failed)")
        #expect(((try? OS.directoryEntries(data + "/share/capsule/envs")) ?? []).isEmpty, "a partial environment was left")
        let badName = try CLI.run(["env", "create", "../x", "six"], environment: env)
        #expect(badName.status != 0 && badName.stderr.contains("is not an environment's name"), "\(badName)")
        let nothing = try CLI.run(["env", "create", "empty"], environment: env)
        #expect(nothing.status != 0 && nothing.stderr.contains("name what to install"), "\(nothing)")
    }

    /// numpy, pandas and matplotlib from PyPI, where pip can reach it (skipped loudly otherwise):
    /// a DataFrame result is HTML beside its text, a figure is one PNG display.
    @Sendable static func dataScienceCodeRunsAsInANotebook() throws {
        let data = try Host.temporaryDirectory()
        defer { treeRemoved(data) }
        chmod(data, 0o755)
        let env = ["XDG_DATA_HOME=\(data)/share", "HOME=\(OS.environment("HOME") ?? data)", "PATH=/usr/bin:/bin"]
        let created = try CLI.run(["env", "create", "science", "numpy", "pandas", "matplotlib"], timeout: 600, environment: env)
        guard created.status == 0 else {
            print("SKIPPED dataScienceCodeRunsAsInANotebook: pip could not install numpy, pandas and matplotlib here:\n\(created.stderr.suffix(2000))")
            return
        }
        let session = try sessionNaming("science", in: EnvironmentStore(root: data + "/share/capsule/envs"))
        defer { session.shutdown(grace: 1) }

        let frame = Rich.run("import pandas as pd, numpy as np\npd.DataFrame({'a': np.arange(3), 'b': ['x', 'y', 'z']})", in: session)
        #expect(frame.finishedCleanly && frame.results.count == 1, "\(frame)")
        #expect(frame.results.first?["text/html"]?.contains("<table") == true, "\(frame)")
        #expect(frame.results.first?["text/plain"]?.contains("a  b") == true, "\(frame)")

        // env create made matplotlib's font list once, in a sandbox; a session starts with it.
        let fontLists = (try? OS.directoryEntries(data + "/share/capsule/envs/science/site-packages/.capsule-cache/matplotlib")) ?? []
        #expect(fontLists.count == 1 && fontLists[0].hasPrefix("fontlist-v"), "\(fontLists) \(created.stdout)")
        let seeded = Rich.run("import matplotlib, os\nprint(sorted(os.listdir(matplotlib.get_cachedir())))", in: session, wantResult: false)
        #expect(seeded.stdout == "[\(fontLists.map { "'\($0)'" }.joined(separator: ", "))]\n", "\(seeded)")

        let shown = Rich.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()", in: session, wantResult: false)
        #expect(shown.finishedCleanly && shown.displays.count == 1, "\(shown.displays.count) displays: \(shown.stderr)")
        let png = shown.displays.first?["image/png"].flatMap { Base64.decode($0) } ?? []
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "the display is a PNG")
        #expect(shown.displays.first?["text/plain"]?.hasPrefix("<Figure size") == true)

        // A figure left open at the end of an execution is shown then, once, and closed.
        let leftOpen = Rich.run("fig = plt.figure()\n_ = plt.bar(['a', 'b'], [3, 5])", in: session, wantResult: false)
        #expect(leftOpen.finishedCleanly && leftOpen.displays.count == 1, "\(leftOpen)")
        let after = Rich.run("print(plt.get_fignums(), plt.get_backend())", in: session, wantResult: false)
        #expect(after.stdout == "[] agg\n" && after.displays.isEmpty, "\(after)")
    }
}
