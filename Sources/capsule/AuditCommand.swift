import ArgumentParser
import CapsuleAudit
import CapsuleOS
import CapsuleRuntime

/// `capsule audit`: read and check audit logs (docs/audit.md).
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Read and verify audit logs: show, follow, count and check their events (docs/audit.md).",
        subcommands: [
            Show.self, Tail.self, Stats.self,
            Verify.self,
        ]
    )

    func run() throws { throw missingSubcommand(Self.self) }
}

extension AuditCommand {
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check that a log's chain is unbroken: no line edited, removed, inserted or reordered.",
            discussion: "Exit 0 when it holds (a note says if sessions did not end: the tail may be cut), 1 naming the first broken line. A live log brings its rotated archives (FILE.1, FILE.2, …); several files are checked as one chain in the order given.")

        @Argument(help: "The log file(s).", completion: .file())
        var files: [String]

        @Option(name: .customLong("key"), help: "The HMAC key file of a keyed log (the policy's audit.key_file).", completion: .file())
        var keyFile: String?

        func run() throws {
            let result: AuditVerification
            do { result = try AuditVerifier.verify(files, keyFile: keyFile) } catch {
                printError("capsule: \(error.message)")
                throw ExitCode(ExitStatus.capsuleError) // as show and stats: capsule could not read it
            }
            let where_ = result.files.count == 1 ? result.files[0] : "\(result.files.count) files (\(result.files.joined(separator: ", ")))"
            if let problem = result.problem {
                printError("capsule: audit log broken at \(problem.description.escapingControlCharacters)")
                if let truncation = result.truncation { printError("capsule: \(truncation)") }
                throw ExitCode(1)
            }
            if result.keyMissing {
                printError("capsule: the chain is HMAC-keyed and no --key was given: only its order (seq) was checked, not its digests")
                throw ExitCode(1)
            }
            try? OS.writeAll(1, "ok: \(where_): \(result.lines) lines, the chain holds; last digest \(result.lastDigest ?? "-")\n")
            if let truncation = result.truncation { printError("capsule: note: \(truncation)") }
        }
    }
}
