import ArgumentParser

extension Run {
    /// `capsule run [OPTION VALUE]… -m MODULE [ARG]…`: as python3 -m, every argument after the
    /// module is the module's, options included (`-m pytest -q /src`), which ArgumentParser would
    /// take for capsule's own. The options before `-m` are ArgumentParser's to parse; nil when the
    /// command line has no such `-m`.
    static func withModule(_ arguments: [String]) -> Run? {
        // Options that take a value as the next word; any other `--` word stands alone, and
        // ArgumentParser judges them all.
        let valued = valuedOptions + ["--mount"]
        var index = 0
        while index < arguments.count, arguments[index] != "-m" {
            let word = arguments[index]
            guard word.hasPrefix("--") else { return nil }
            index += valued.contains(word) ? 2 : 1
        }
        guard index + 1 < arguments.count, arguments[index] == "-m" else { return nil }
        guard var run = try? Run.parse(Array(arguments[..<index]) + ["-m", arguments[index + 1]]) else { return nil }
        run.arguments = Array(arguments[(index + 2)...])
        return run
    }

    /// The options `run` takes before its script, each with a value.
    static let valuedOptions = ["--policy", "--report", "--approver", "--audit", "--approval-timeout", "--display-dir", "--output-dir"]

    /// `capsule run [OPTION VALUE]… SCRIPT [ARG]…` parsed without ArgumentParser, whose reflection
    /// over the commands' properties costs a cold run about 2 ms (docs/performance.md); nil for
    /// anything else (help, `--`, `--name=value`, an option twice or unknown, a value or a script
    /// argument starting with `-`, a bad value), which ArgumentParser then parses and explains as
    /// ever. QuickRunTests holds the result to ArgumentParser's for every form it takes.
    static func quickly(_ arguments: [String]) -> Run? {
        var values: [String: String] = [:]
        var index = 0
        while index < arguments.count, arguments[index].hasPrefix("-") {
            let name = arguments[index]
            guard valuedOptions.contains(name), values[name] == nil, index + 1 < arguments.count,
                  !arguments[index + 1].hasPrefix("-") else { return nil }
            values[name] = arguments[index + 1]
            index += 2
        }
        guard index < arguments.count, !arguments[index].isEmpty else { return nil }
        let rest = Array(arguments[(index + 1)...])
        guard !rest.contains(where: { $0.hasPrefix("-") }) else { return nil }

        var options = SessionOptions()
        options.policy = values["--policy"] ?? "sandbox"
        options.report = values["--report"]
        options.approver = values["--approver"]
        options.audit = values["--audit"]
        options.displayDir = values["--display-dir"]
        options.outputDir = values["--output-dir"]
        options.mounts = []
        if let text = values["--approval-timeout"] {
            guard let seconds = Double(text), SessionOptions.approvalTimeoutIsValid(seconds) else { return nil }
            options.approvalTimeout = seconds
        } else {
            options.approvalTimeout = 60
        }
        // Each value as ArgumentParser would take it, or ArgumentParser says what is wrong.
        guard values.values.allSatisfy({ !$0.isEmpty }), options.reportProblem == nil else { return nil }
        var run = Run()
        run.options = options
        run.module = nil
        run.script = arguments[index]
        run.arguments = rest
        return run
    }
}
