// The policy commands through the real `capsule` binary: what a user reads on stdout and stderr.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsulePolicy

@Suite("capsule policy, end to end") struct PolicyCommandTests {
    func requireBinary() throws {
        try #require(access(CLI.executable, X_OK) == 0, "capsule was not built at \(CLI.executable)")
    }

    @Test func checkNotesGrantsWithoutEffectOnStderr() throws {
        try requireBinary()
        let agent = "\(Host.repository)/examples/policies/agent.toml"
        let run = try CLI.run(["policy", "check", agent])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "ok \(agent) (level standard)\n", "\(run)")
        let expected = try PolicyLoader.load(agent).notes.map { "\(agent): note: \($0)" }
        #expect(!expected.isEmpty)
        #expect(run.stderrLines == expected, "\(run)")
    }
}
