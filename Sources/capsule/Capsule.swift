import ArgumentParser
import CapsuleRuntime

@main
struct Capsule: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capsule",
        abstract: "Run untrusted Python in a Linux sandbox that reaches the world only through granted capabilities.",
        version: CapsuleVersion.current,
        subcommands: [Run.self, Exec.self, Repl.self, Serve.self, PolicyCommand.self, CapabilitiesCommand.self, AuditCommand.self, EnvCommand.self, Doctor.self]
    )

    /// As ArgumentParser's main, except that `help NAME` for a command that does not exist is a
    /// usage error (ArgumentParser would show the top-level help and exit 0), and that the common
    /// forms of `capsule run` skip its parsing (Run.quickly).
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "help", let error = unknownHelpTopic(Array(arguments.dropFirst())) { exit(withError: error) }
        if arguments.first == "run", let run = Run.quickly(Array(arguments.dropFirst())) ?? Run.withModule(Array(arguments.dropFirst())) {
            do {
                try run.validate()
                try run.run() // ends by throwing its ExitCode
            } catch {
                exit(withError: error)
            }
        }
        main(arguments)
    }

    /// Bare `capsule` names no command: a usage error, not a request for help.
    func run() throws { throw missingSubcommand(Self.self) }

    private static func unknownHelpTopic(_ words: [String]) -> ValidationError? {
        var command: any ParsableCommand.Type = Capsule.self
        for word in words where !word.hasPrefix("-") {
            guard let next = command.configuration.subcommands.first(where: { $0._commandName == word }) else {
                return ValidationError("`\(word)` is not a command of `\(commandPath(command))`; \(commandList(command))")
            }
            command = next
        }
        return nil
    }
}

/// The error for a command with subcommands given none (`capsule`, `capsule policy`).
func missingSubcommand(_ command: any ParsableCommand.Type) -> ValidationError {
    ValidationError("name a command; \(commandList(command))")
}

private func commandList(_ command: any ParsableCommand.Type) -> String {
    let names = command.configuration.subcommands.map { "`\($0._commandName)`" }
    return "the commands of `\(commandPath(command))` are \(names.joined(separator: ", ")) (`\(commandPath(command)) --help` says more)"
}

private func commandPath(_ command: any ParsableCommand.Type) -> String {
    command == Capsule.self ? "capsule" : "capsule \(command._commandName)"
}
