// Capabilities through the capsule binary: a scripted approver and --display-dir.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS

@Suite("capsule binary: capabilities") struct CapabilityCLITests {
    @Test func aScriptedApproverApprovesAndDenies() throws {
        let tree = try HostTree()
        let log = "\(tree.path)/approvals.log"
        let approver = "\(tree.path)/approve.sh"
        try Host.writeFile(approver, """
            #!/bin/sh
            read line
            echo "$line" >> \(log)
            case "$line" in *hello*) echo approve;; *) echo "deny only hello today";; esac
            """)
        chmod(approver, 0o755)
        let policy = "\(tree.path)/ask.toml"
        try Host.writeFile(policy, """
            level = "restricted"
            [capabilities.file]
            read = ["\(tree.path)/in"]
            ask = true
            """)
        let script = "\(tree.path)/job.py"
        try Host.writeFile(script, """
            from capsule import file, CapabilityDenied
            print(file.read_text("\(tree.path)/in/hello.txt"), end="")
            try:
                file.read_text("\(tree.path)/in/a/secret.txt")
            except CapabilityDenied as e:
                print(e)
            """)
        let run = try CLI.run(["run", "--policy", policy, "--approver", approver, script])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "hello from the host\nfile.read_bytes was not approved: only hello today\n", "\(run)")
        let lines = (Host.readText(log) ?? "").split(separator: "\n")
        #expect(lines.count == 2 && lines[0].hasPrefix(#"{"capability":"file","method":"read_bytes","arguments":{"path":"#), "\(lines)")

        // With no terminal and no approver, the call is denied, saying why.
        let unattended = try CLI.run(["run", "--policy", policy, script])
        #expect(unattended.status == 1, "\(unattended)")
        #expect(unattended.stderr.contains("this session has no terminal and no --approver"), "\(unattended)")
    }

    @Test func capabilitiesListShowsEachMethodAndWhatIsNotGranted() throws {
        let run = try CLI.run(["capabilities", "list", "--policy", "restricted"])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.hasPrefix("Capabilities of restricted (level restricted):\n\ndisplay: "), "\(run)")
        #expect(run.stdout.contains("  input.ask(question)\n"), "\(run)")
        #expect(run.stdout.hasSuffix("Not granted (using one raises capsule.CapabilityDenied): env, file, net, db\n"), "\(run)")
        let tree = try HostTree()
        let policy = "\(tree.path)/files.toml"
        try Host.writeFile(policy, "level = \"restricted\"\n[capabilities.file]\nread = [\"\(tree.path)/in\"]\n")
        let files = try CLI.run(["capabilities", "list", "--policy", policy])
        #expect(files.stdout.contains("  file.write_bytes(path, data)  [needs level standard; denied here]\n"), "\(files)")
        #expect(files.stdout.contains("  file.mkdir(path, parents=False)  [needs level standard; denied here]\n"), "\(files)")
        let bad = try CLI.run(["capabilities", "list", "--policy", "/nonexistent.toml"])
        #expect(bad.status == 125 && bad.stderr.hasPrefix("capsule: bad policy: "), "\(bad)")
    }

    @Test func theCapsuleKitExampleRegistersItsOwnCapability() throws {
        let example = "\(Host.buildDirectory)/capsule-kit-example"
        try #require(access(example, X_OK) == 0, "the example was not built at \(example)")
        let run = try CLI.run([], via: [example]) // the example ignores the capsule path it is given
        #expect(run.stdout.hasPrefix("Hello, sandbox!\nValueError: greet: who is empty\noutcome: finished(status: "), "\(run)")
        // Then the same capability through the async API.
        #expect(run.stdout.contains("\nresult: 'HELLO, ASYNC.'\noutcome: finished(status: "), "\(run)")
    }

    @Test func displayDirKeepsRichOutput() throws {
        let tree = try HostTree()
        let script = "\(tree.path)/show.py"
        try Host.writeFile(script, """
            class Chart:
                def _repr_svg_(self): return "<svg/>"
                def _repr_png_(self): return b"\\x89PNG"
                def __repr__(self): return "Chart()"
            display(Chart())
            display({"text/html": "<b>hi</b>"}, raw=True)
            """)
        let directory = "\(tree.path)/shown"
        let run = try CLI.run(["run", "--display-dir", directory, script])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "Chart()\n", "\(run)")
        #expect(Host.readText("\(directory)/display-001.svg") == "<svg/>")
        #expect((try? OS.readFile("\(directory)/display-001.png", limit: 100)) == [0x89, 0x50, 0x4E, 0x47], "images are decoded")
        #expect(Host.readText("\(directory)/display-002.html") == "<b>hi</b>")

        let plain = try CLI.run(["run", script])
        #expect(plain.stdout == "Chart()\n", "\(plain)")
        #expect(plain.stderr.contains("capsule: display 2: text/html not shown; --display-dir DIR writes it to files"), "\(plain)")
    }
}
