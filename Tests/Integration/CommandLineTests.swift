// The command line itself, through the real `capsule` binary: --version, exec's arguments, usage
// errors, shell completion and doctor's report.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsulePolicy
import CapsuleRuntime

@Suite("capsule's command line") struct CommandLineTests {
    func requireBinary() throws {
        try #require(access(CLI.executable, X_OK) == 0, "capsule was not built at \(CLI.executable)")
    }

    @Test func versionComesFromTheOneDefinition() throws {
        try requireBinary()
        let run = try CLI.run(["--version"])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == CapsuleVersion.current + "\n", "\(run)")
        #expect(run.stderr.isEmpty, "\(run)")
    }

    @Test func execPassesArgumentsAsPythonDoes() throws {
        // python3 -c CODE a b gives ['-c', 'a', 'b']; capsule's own `--` is not passed on, later ones are.
        try requireBinary()
        let show = "import sys; print(sys.argv)"
        let cases: [([String], String)] = [
            (["-c", show, "a", "b"], "['-c', 'a', 'b']"),
            (["-c", show, "--", "a", "b"], "['-c', 'a', 'b']"),
            (["-c", show, "a", "--", "-x"], "['-c', 'a', '--', '-x']"),
            (["-c", show, "--", "--policy", "x"], "['-c', '--policy', 'x']"),
            (["--policy", "sandbox", "-c", show, "-"], "['-c', '-']"),
            (["-c", show], "['-c']"),
        ]
        for (arguments, argv) in cases {
            let run = try CLI.run(["exec"] + arguments)
            #expect(run.status == 0, "\(arguments)\n\(run)")
            #expect(run.stdout == argv + "\n", "\(arguments)\n\(run)")
        }
    }

    @Test func execFromStandardInputTakesArgumentsToo() throws {
        try requireBinary()
        let scratch = try CLITests.Scratch()
        let code = try scratch.file("argv.py", "import sys\nprint(sys.argv)\n")
        let run = try CLI.run(["exec", "-", "a", "-c", "b"], stdin: code)
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "['-', 'a', '-c', 'b']\n", "\(run)")
        let terminated = try CLI.run(["exec", "--", "-", "a"], stdin: code)
        #expect(terminated.stdout == "['-', 'a']\n", "\(terminated)")
    }

    @Test func execWithoutCodeSaysWhatToType() throws {
        try requireBinary()
        let none = try CLI.run(["exec"])
        #expect(none.status == 64, "\(none)")
        #expect(none.stderrLines.first == "Error: give the code with -c CODE, or `-` to read it from standard input", "\(none)")
        let file = try CLI.run(["exec", "job.py", "a"])
        #expect(file.status == 64, "\(file)")
        #expect(file.stderrLines.first == "Error: `job.py` is not `-`; to run a file use `capsule run job.py`", "\(file)")
        let help = try CLI.run(["exec", "--help"])
        #expect(help.status == 0 && help.stdout.contains("sys.argv is ['-c', ARG...]"), "\(help)")
    }

    @Test(arguments: [
        ([], "Error: name a command; the commands of `capsule` are `run`, `exec`, `repl`, `serve`, `policy`, `capabilities`, `audit`, `env`, `doctor`"),
        (["policy"], "Error: name a command; the commands of `capsule policy` are `check`, `show`, `explain`, `diff`"),
        (["help", "bogus"], "Error: `bogus` is not a command of `capsule`;"),
        (["help", "policy", "bogus"], "Error: `bogus` is not a command of `capsule policy`;"),
        (["bogus"], "Error: Unexpected argument 'bogus'"),
        (["--bogus"], "Error: Unknown option '--bogus'"),
        (["run", "--nope", "x.py"], "Error: Unknown option '--nope'"),
        (["run"], "Error: name a script to run, or a module with -m MODULE"),
        (["run", "--policy"], "Error: Missing value for '--policy <policy>'"),
        (["exec", "-c"], "Error: Missing value for '-c <code>'"),
        (["exec"], "Error: give the code with -c CODE"),
        (["policy", "check"], "Error: Missing expected argument '<policies> ...'"),
        (["policy", "diff", "sandbox"], "Error: Missing expected argument '<second>'"),
        (["doctor", "extra"], "Error: Unexpected argument 'extra'"),
        (["--generate-completion-script", "tcsh"], "Error: Can't generate completion scripts for 'tcsh'"),
    ])
    func usageErrorsExit64(arguments: [String], message: String) throws {
        try requireBinary()
        let run = try CLI.run(arguments)
        #expect(run.status == 64, "EX_USAGE for \(arguments)\n\(run)")
        #expect(run.stderr.hasPrefix(message), "\(arguments)\n\(run)")
        #expect(run.stdout.isEmpty, "\(arguments)\n\(run)")
    }

    @Test func helpForAKnownCommandIsNoError() throws {
        try requireBinary()
        for arguments in [["--help"], ["help"], ["help", "policy", "check"], ["run", "--help"], ["policy", "--help"]] {
            let run = try CLI.run(arguments)
            #expect(run.status == 0 && run.stdout.contains("USAGE:"), "\(arguments)\n\(run)")
        }
    }

    @Test func bashCompletionOffersLevelsPolicyFilesAndScripts() throws {
        try requireBinary()
        let script = try CLI.run(["--generate-completion-script", "bash"])
        #expect(script.status == 0, "\(script)")
        #expect(script.stdout.contains("printf '\\''%s\\n'\\'' \(Level.allCases.map(\.rawValue).joined(separator: " "))"), "\(script)")
        #expect(script.stdout.contains("compgen -o plusdirs -f -X '\\''!*.toml'\\''"), "policy files\n\(script)")
        #expect(script.stdout.contains("-o plusdirs -fX '!*.@(py)'"), "scripts for run\n\(script)")

        // The same script, in bash, offers them: what a user sees after TAB.
        let scratch = try CLITests.Scratch()
        for name in ["ci.toml", "job.py", "notes.txt"] { _ = try scratch.file(name, "") }
        #expect(mkdir("\(scratch.path)/sub", 0o700) == 0)
        _ = try scratch.file("sub/deep.toml", "")
        defer { unlink("\(scratch.path)/sub/deep.toml"); rmdir("\(scratch.path)/sub") }
        let harness = #"""
            eval "$("$1" --generate-completion-script bash)" && cd "$2" || exit 1
            offer() {
                COMP_LINE="$1"; COMP_POINT=${#1}; read -ra COMP_WORDS <<< "$1"
                [[ "$1" == *" " ]] && COMP_WORDS+=("")
                COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
                _capsule capsule "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
                echo "$1=> ${COMPREPLY[*]}"
            }
            offer "capsule run --policy "
            offer "capsule exec --policy s"
            offer "capsule run --policy sub/"
            offer "capsule run "
            offer "capsule policy explain "
            """#
        let bash = try CLI.run([scratch.path], via: ["/bin/bash", "-c", harness, "bash"])
        #expect(bash.status == 0, "\(bash)")
        // Files come in directory order: compare the words as sets.
        let offered = bash.stdout.split(separator: "\n").compactMap { line -> (String, Set<String>)? in
            guard let cut = line.firstRange(of: "=> ") else { return nil }
            return (String(line[..<cut.lowerBound]), Set(line[cut.upperBound...].split(separator: " ").map(String.init)))
        }
        let levels = Level.allCases.map(\.rawValue)
        let expected: [(String, Set<String>)] = [
            ("capsule run --policy ", Set(levels + ["ci.toml", "sub"])),
            ("capsule exec --policy s", ["sandbox", "standard", "sub"]),
            ("capsule run --policy sub/", ["sub/deep.toml"]),
            ("capsule run ", ["job.py", "sub"]),
            ("capsule policy explain ", Set(levels + ["ci.toml", "sub"])),
        ]
        #expect(offered.map(\.0) == expected.map(\.0), "\(bash)")
        for ((line, words), (_, want)) in zip(offered, expected) {
            #expect(words == want, "after `\(line)`\n\(bash)")
        }
    }

    @Test func doctorSaysWhatEachNamespaceIsFor() throws {
        try requireBinary()
        let run = try CLI.run(["doctor"])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.hasPrefix("capsule         \(CapsuleVersion.current)\n"), "\(run)")
        // `ok  NAME  DETAIL`: each namespace says what it isolates, in words of its own.
        var details: [String: String] = [:]
        for line in run.stdout.split(separator: "\n") where line.hasPrefix("ok  ") || line.hasPrefix("no  ") {
            let words = line.dropFirst(4).split(separator: " ", maxSplits: 1)
            if words.count == 2 { details[String(words[0])] = words[1].drop { $0 == " " }.description }
        }
        let expected = ["user-namespace": "unprivileged id", "pid-namespace": "processes", "net-namespace": "network",
                        "mount-namespace": "mount", "ipc-namespace": "IPC", "uts-namespace": "hostname",
                        "cgroup-namespace": "cgroup"]
        for (namespace, word) in expected {
            #expect(details[namespace]?.contains(word) == true, "\(namespace): \(details[namespace] ?? "missing")\n\(run)")
        }
        let namespaceDetails = expected.keys.compactMap { details[$0] }
        #expect(Set(namespaceDetails).count == expected.count, "every namespace has its own detail\n\(run)")
        #expect(details["sandbox-start"]?.hasPrefix("Python ") == true, "\(run)")
    }
}
