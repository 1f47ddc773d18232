import ArgumentParser
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

struct CapabilitiesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capabilities",
        abstract: "Show what a policy lets code call, capability by capability and method by method.",
        subcommands: [List.self]
    )

    func run() throws { throw missingSubcommand(Self.self) }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List the capabilities a policy grants, with each method, its parameters and the level it needs.")

        @Option(help: "A policy level or a policy file.", completion: Completion.policy)
        var policy: String = "sandbox"

        func run() throws {
            let loaded: Policy
            do { loaded = try PolicyLoader.load(policy) } catch {
                for problem in error.all { printError("capsule: bad policy: \(problem)") }
                throw ExitCode(125)
            }
            try? OS.writeAll(1, Self.text(Broker(policy: loaded)))
        }

        /// The listing: each granted capability, then what is not granted and what would grant it.
        static func text(_ broker: Broker) -> String {
            let policy = broker.policy
            var lines = ["Capabilities of \(policy.origin) (level \(policy.level.rawValue)):".escapingControlCharacters, ""]
            for capability in broker.capabilities {
                let name = capability.name.hasPrefix("custom.") ? String(capability.name.dropFirst(7)) : capability.name
                lines.append("\(name): \(capability.summary)".escapingControlCharacters)
                for method in capability.methods {
                    let parameters = method.parameters.map { parameter in
                        parameter.defaultValue.map { "\(parameter.name)=\(pythonText($0))" } ?? parameter.name
                    }.joined(separator: ", ")
                    let level = method.level > policy.level ? "  [needs level \(method.level.rawValue); denied here]" : ""
                    lines.append("  \(name).\(method.name)(\(parameters))\(level)".escapingControlCharacters)
                    if let doc = method.doc.split(separator: "\n").first { lines.append("      \(doc)".escapingControlCharacters) }
                }
                lines.append("")
            }
            let granted = Set(broker.capabilities.map(\.name))
            let missing = ["display", "input", "env", "file", "net", "db"].filter { !granted.contains($0) }
            if !missing.isEmpty {
                lines.append("Not granted (using one raises capsule.CapabilityDenied): \(missing.joined(separator: ", "))")
            }
            return lines.joined(separator: "\n") + "\n"
        }

        /// A default as Python shows it.
        static func pythonText(_ value: JSONValue) -> String {
            switch value {
            case .null: "None"
            case .bool(let flag): flag ? "True" : "False"
            case .string(let text): "'\(text)'"
            case .object(let members) where members.isEmpty: "{}"
            case .array(let elements) where elements.isEmpty: "[]"
            default: value.description
            }
        }
    }
}
