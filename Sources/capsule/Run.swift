import ArgumentParser
import CapsuleRuntime
import CapsuleOS

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a Python script in the sandbox; exit with the script's status.",
        discussion: """
            Output streams as it is produced. Exit status: the script's own (sys.exit(n) gives n, an \
            uncaught exception 1), or 124 timeout, 125 capsule could not run it, 126 output limit, \
            130 interrupted (143 SIGTERM, 129 SIGHUP), 137 memory limit, 152 CPU time limit. See \
            docs/exit-status.md.
            """
    )

    @OptionGroup var options: SessionOptions

    @Argument(help: "The Python script to run.", completion: Completion.script)
    var script: String

    @Argument(parsing: .captureForPassthrough, help: "Arguments for the script (its sys.argv[1:]).")
    var arguments: [String] = []

    func run() throws {
        report(.unfinished, to: options.report) // replaced when the run ends, however it ends
        switch readSource(script) {
        case .success(let source):
            throw ExitCode(runScript(source, script: script, argv: [script] + arguments, options: options))
        case .failure(let error):
            printError("capsule: \(error.message)")
            throw ExitCode(report(ExitStatus(code: ExitStatus.capsuleError, reason: error.message), to: options.report))
        }
    }
}
