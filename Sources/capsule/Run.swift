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

    @Option(name: .customShort("m"), help: ArgumentHelp("Run a module as a script, as python3 -m does (`-m pytest /src`).",
                                                        discussion: "Every argument after it is the module's (its sys.argv[1:]).",
                                                        valueName: "module"))
    var module: String?

    @Argument(help: "The Python script to run.", completion: Completion.script)
    var script: String = ""

    @Argument(parsing: .captureForPassthrough, help: "Arguments for the script (its sys.argv[1:]).")
    var arguments: [String] = []

    func validate() throws {
        if module == nil && script.isEmpty { throw ValidationError("name a script to run, or a module with -m MODULE") }
        if let module, module.isEmpty || !module.split(separator: ".", omittingEmptySubsequences: false).allSatisfy(Self.isIdentifier) {
            throw ValidationError("-m takes a module's dotted name, such as pytest or http.server, not `\(module)`")
        }
    }

    private static func isIdentifier(_ part: Substring) -> Bool {
        guard let first = part.unicodeScalars.first, first == "_" || first.properties.isXIDStart else { return false }
        return part.unicodeScalars.allSatisfy { $0 == "_" || $0.properties.isXIDContinue }
    }

    func run() throws {
        report(.unfinished, to: options.report) // replaced when the run ends, however it ends
        if let module {
            // As python3 -m: sys.argv[0] is "-m" until runpy finds the module and puts its path there.
            let moduleArguments = (script.isEmpty ? [] : [script]) + arguments
            let code = "import runpy as _capsule_runpy\n_capsule_runpy.run_module(\(pythonString(module)), run_name='__main__', alter_sys=True)\n"
            throw ExitCode(runCode(code, filename: "<run_module>", argv: ["-m"] + moduleArguments, wantResult: false, options: options))
        }
        switch readSource(script) {
        case .success(let source):
            throw ExitCode(runScript(source, script: script, argv: [script] + arguments, options: options))
        case .failure(let error):
            printError("capsule: \(error.message)")
            throw ExitCode(report(ExitStatus(code: ExitStatus.capsuleError, reason: error.message), to: options.report))
        }
    }
}

/// `text` as a Python string literal (for code capsule writes itself).
func pythonString(_ text: String) -> String {
    var out = "'"
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": out += "\\\\"
        case "'": out += "\\'"
        case _ where scalar.value < 0x20 || scalar.value == 0x7F: out += "\\x" + String(scalar.value, radix: 16).leftPadded(to: 2)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "'"
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
