import ArgumentParser

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Python code given with -c, or read from standard input with -.",
        discussion: "The value of a trailing expression is printed, as in a REPL. Exit status as for `capsule run`."
    )

    @OptionGroup var options: SessionOptions

    @Option(name: .customShort("c"), help: "The code to run.")
    var code: String?

    @Argument(help: "`-` to read the code from standard input.")
    var source: String?

    func validate() throws {
        switch (code, source) {
        case (nil, nil): throw ValidationError("give the code with -c CODE, or `-` to read it from standard input")
        case (.some, .some): throw ValidationError("give either -c CODE or `-`, not both")
        case (nil, let source?) where source != "-":
            throw ValidationError("`\(source)` is not `-`; to run a file use `capsule run \(source)`")
        default: break
        }
    }

    func run() throws {
        report(.unfinished, to: options.report) // replaced when the run ends, however it ends
        if let code {
            throw ExitCode(runCode(code, filename: "<string>", argv: ["-c"], wantResult: true, options: options))
        }
        var text = ""
        while let line = readLine(strippingNewline: false) { text += line }
        throw ExitCode(runCode(text, filename: "<stdin>", argv: ["-"], wantResult: true, options: options))
    }
}
