import ArgumentParser

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Read audit logs: show, follow and count their events (docs/audit.md).",
        subcommands: [
            Show.self, Tail.self, Stats.self,
        ]
    )

    func run() throws { throw missingSubcommand(Self.self) }
}
