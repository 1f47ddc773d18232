// The policy commands through the real `capsule` binary: what a user reads on stdout and stderr.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsulePolicy

@Suite("capsule policy: notes, and the docs' examples") struct PolicyCommandTests {
    func requireBinary() throws {
        try #require(access(CLI.executable, X_OK) == 0, "capsule was not built at \(CLI.executable)")
    }

    @Test func checkNotesGrantsWithoutEffectOnStderr() throws {
        try requireBinary()
        let scratch = try CLITests.Scratch()
        let agent = try scratch.file("input.toml", "level = \"restricted\"\n[capabilities.input]\nrate_per_minute = 5\n")
        let run = try CLI.run(["policy", "check", agent])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "ok \(agent) (level restricted)\n", "\(run)")
        let expected = try PolicyLoader.load(agent).notes.map { "\(agent): note: \($0)" }
        #expect(!expected.isEmpty)
        #expect(run.stderrLines == expected, "\(run)")
    }

    /// Each `$ capsule …` example in docs/policy.md, run from the repository root (through sh, so
    /// globs expand and stderr lands where a terminal shows it), prints exactly what the docs show.
    @Test func theDocsShowWhatTheCommandsPrint() throws {
        try requireBinary()
        let docs = try Host.readFile("\(Host.repository)/docs/policy.md")
        var examples: [(command: String, output: String)] = []
        for block in docs.split(separator: "```\n", omittingEmptySubsequences: false) where block.hasPrefix("$ capsule ") {
            let lines = block.split(separator: "\n", omittingEmptySubsequences: false)
            examples.append((String(lines[0].dropFirst("$ capsule ".count)), lines.dropFirst().joined(separator: "\n")))
        }
        #expect(examples.map { $0.command.split(separator: " ").prefix(2).joined(separator: " ") }
            == ["policy check", "policy show", "policy explain", "policy diff"], "every policy command has an example")
        for (command, output) in examples {
            let run = try CLI.run([Host.repository], via: ["/bin/sh", "-c", "cd \"$2\" && \"$1\" \(command) 2>&1", "sh"])
            #expect(run.status == 0 || run.status == 1, "\(command)\n\(run)")
            #expect(run.stdout == output, "docs/policy.md shows other output for `capsule \(command)`\n\(run)")
        }
    }
}
