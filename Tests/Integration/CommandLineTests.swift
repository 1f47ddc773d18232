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
}
