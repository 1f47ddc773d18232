import ArgumentParser

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run Python code given with -c, or read from standard input with -.",
        usage: "capsule exec [--policy <policy>] [--report <report>] (-c <code> | -) [--] [<arguments> ...]",
        discussion: """
            The value of a trailing expression is printed, as in a REPL. As with python3, the code's \
            sys.argv is ['-c', ARG...] or ['-', ARG...]; a `--` before the arguments ends capsule's \
            own options and is not passed on. Exit status as for `capsule run`.
            """
    )

    @OptionGroup var options: SessionOptions

    @Option(name: .customShort("c"), help: ArgumentHelp("The code to run.", valueName: "code"))
    var code: String?

    @Argument(parsing: .captureForPassthrough,
              help: "`-` to read the code from standard input (without -c), then arguments for the code (its sys.argv[1:]).")
    var arguments: [String] = []

    /// The code's own arguments: what follows `-c CODE` or `-`, without the `--` that ends capsule's options.
    private var codeArguments: [String] {
        var rest = arguments.first == "--" ? Array(arguments.dropFirst()) : arguments
        if code == nil { rest.removeFirst() } // the `-`, which validate() requires
        return rest
    }

    func validate() throws {
        guard code == nil else { return }
        let first = arguments.first == "--" ? arguments.dropFirst().first : arguments.first
        switch first {
        case nil: throw ValidationError("give the code with -c CODE, or `-` to read it from standard input")
        case "-": break
        // The arguments capture every word, help flags too: without code, they ask for help.
        case "-h", "--help": throw CleanExit.helpRequest(self)
        case let source?: throw ValidationError("`\(source)` is not `-`; to run a file use `capsule run \(source)`")
        }
    }

    func run() throws {
        report(.unfinished, to: options.report) // replaced when the run ends, however it ends
        if let code {
            throw ExitCode(runCode(code, filename: "<string>", argv: ["-c"] + codeArguments, wantResult: true, options: options))
        }
        var text = ""
        while let line = readLine(strippingNewline: false) { text += line }
        throw ExitCode(runCode(text, filename: "<stdin>", argv: ["-"] + codeArguments, wantResult: true, options: options))
    }
}
