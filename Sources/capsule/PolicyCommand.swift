import ArgumentParser
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check, show, explain and compare policies (docs/policy.md).",
        subcommands: [Check.self, Show.self, Explain.self, Diff.self]
    )

    func run() throws { throw missingSubcommand(Self.self) }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate policy files; exit 1 listing every problem, or 0 when all are valid.")

        @Argument(help: "Policy files (or level names).", completion: Completion.policy)
        var policies: [String]

        func validate() throws {
            if policies.isEmpty { throw ValidationError("name at least one policy file, like `capsule policy check policies/sandbox.toml`") }
        }

        func run() throws {
            var failed = false
            for specifier in policies {
                let problems = PolicyLoader.problems(specifier)
                if problems.isEmpty, let policy = try? PolicyLoader.load(specifier) {
                    // Unbuffered, like the notes on stderr, so a terminal shows each under its file.
                    try? OS.writeAll(1, "ok \(specifier) (level \(policy.level.rawValue))\n")
                    for note in policy.notes { printError("\(specifier): note: \(note)".escapingControlCharacters) }
                } else {
                    failed = true
                    for problem in problems { printError(problem.description) }
                }
            }
            if failed { throw ExitCode.failure }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective policy, after `extends` and defaults, as TOML.")

        @Argument(help: "A policy file or a level name.", completion: Completion.policy)
        var policy: String

        func run() throws { print(try loadOrExit(policy).tomlText, terminator: "") }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say in plain language what code under the policy can read, write and reach, and its limits.")

        @Argument(help: "A policy file or a level name.", completion: Completion.policy)
        var policy: String

        func run() throws { print(try loadOrExit(policy).explanation, terminator: "") }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show how two effective policies differ; exit 0 when they are the same, 1 when not.")

        @Argument(help: "The first policy (file or level).", completion: Completion.policy)
        var first: String

        @Argument(help: "The second policy (file or level).", completion: Completion.policy)
        var second: String

        func run() throws {
            let a = try loadOrExit(first), b = try loadOrExit(second)
            let lines = a.differences(from: b)
            if lines.isEmpty {
                print("\(first) and \(second) are the same policy")
                return
            }
            print("--- \(first)\n+++ \(second)")
            for line in lines { print(line) }
            throw ExitCode.failure
        }
    }
}

/// The policy, or a message and the capsule-error status.
func loadOrExit(_ specifier: String) throws -> Policy {
    do { return try PolicyLoader.load(specifier) } catch {
        for problem in error.all { printError("capsule: bad policy: \(problem)") }
        throw ExitCode(ExitStatus.capsuleError)
    }
}
