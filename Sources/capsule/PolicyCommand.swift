#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleAudit
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check, show, explain, compare and learn policies (docs/policy.md).",
        subcommands: [Check.self, Show.self, Explain.self, Diff.self, Learn.self]
    )

    func run() throws { throw missingSubcommand(Self.self) }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
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
            commandName: "show",
            abstract: "Print the effective policy, after `extends` and defaults, as TOML.")

        @Argument(help: "A policy file or a level name.", completion: Completion.policy)
        var policy: String

        func run() throws { print(try loadOrExit(policy).tomlText, terminator: "") }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "explain",
            abstract: "Say in plain language what code under the policy can read, write and reach, and its limits.")

        @Argument(help: "A policy file or a level name.", completion: Completion.policy)
        var policy: String

        func run() throws { print(try loadOrExit(policy).explanation, terminator: "") }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "diff",
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

    struct Learn: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "learn",
            abstract: "Write the narrowest policy that allows every capability call an audit log records.",
            discussion: "Record a job with `capsule run --policy trusted --audit log.jsonl job.py`, then `capsule policy learn log.jsonl -o job.toml`.")

        @Argument(help: "Audit logs (each read with its rotated archives, oldest first).")
        var logs: [String]

        @Option(help: "Only the session whose id starts with this.")
        var session: String?

        @Option(help: "Take limits and [sandbox] settings from this policy (a level or a file).", completion: Completion.policy)
        var base = "sandbox"

        @Option(name: .shortAndLong, help: "Write the policy to this file instead of standard output.")
        var output: String?

        @Flag(help: "Replace the -o file when it exists.")
        var force = false

        func validate() throws {
            if logs.isEmpty { throw ValidationError("name at least one audit log, like `capsule policy learn audit.jsonl`") }
        }

        func run() throws {
            let basePolicy = try loadOrExit(base)
            if let output, OS.fileExists(output), !force {
                fail("\(output) exists; pass --force to replace it, or name another file with -o")
            }
            var events: [JSONValue] = []
            for log in logs {
                do throws(AuditFailure) { events += try Self.events(of: log) } catch { fail(error.message) }
            }
            var policies: [String: PolicyLearner.Source] = [:]
            for (name, sha) in PolicyLearner.policiesUsed(events) {
                if case .loaded? = policies[name] { continue }
                do throws(PolicyError) {
                    let policy = try PolicyLoader.load(name)
                    policies[name] = policy.digest == sha ? .loaded(policy)
                        : .unavailable("the policy `\(name)` it ran under has changed since the log was written (its SHA-256 is not the log's)")
                } catch {
                    policies[name] = .unavailable("the policy `\(name)` it ran under cannot be read here (\(error.message))")
                }
            }
            let learned: PolicyLearner.Learned
            do throws(AuditFailure) {
                learned = try PolicyLearner.learn(events, .init(session: session, base: basePolicy, logName: logs.joined(separator: ", "),
                                                                policies: policies))
            } catch { fail(error.message) }
            for note in learned.notes { printError("capsule: note: \(note)".escapingControlCharacters) }
            guard let output else {
                try? OS.writeAll(1, learned.text)
                return
            }
            do throws(SystemError) {
                let fd = try OS.open(output, flags: O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL))
                defer { OS.close(fd) }
                try OS.writeAll(fd, learned.text)
            } catch {
                fail("cannot write \(output): \(OS.errorText(error.errno))")
            }
            printError("capsule: wrote \(output) (level \(learned.policy.level.rawValue)); check it with `capsule policy explain \(output)`")
        }

        /// The events of one log and its archives, or why it is not a log to learn from.
        static func events(of log: String) throws(AuditFailure) -> [JSONValue] {
            var lines: [AuditLine] = []
            for file in AuditReader.chainFiles(log) { lines += try AuditReader.lines(of: file) }
            guard !lines.isEmpty else {
                throw AuditFailure("\(log) is empty: it records no session yet; run code with `capsule run --audit \(log) …` first")
            }
            let events = lines.compactMap(\.event).filter { $0["kind"]?.stringValue != nil && $0["seq"]?.intValue != nil }
            guard !events.isEmpty else {
                throw AuditFailure("\(log) is not a capsule audit log: no line of it is an audit event (a JSON object with `kind` and `seq`, "
                    + "as `capsule run --audit FILE` writes)")
            }
            if events.count < lines.count {
                printError("capsule: note: \(log): \(lines.count - events.count) of its \(lines.count) lines are not audit events and were skipped; `capsule audit verify \(log)` says which")
            }
            return events
        }

        private func fail(_ message: String) -> Never {
            printError("capsule: policy learn: \(message)".escapingControlCharacters)
            Learn.exit(withError: ExitCode.failure)
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
