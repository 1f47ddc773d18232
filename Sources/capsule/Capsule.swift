import ArgumentParser

@main
struct Capsule: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capsule",
        abstract: "Run untrusted Python in a Linux sandbox that reaches the world only through granted capabilities.",
        subcommands: [Run.self, Exec.self, PolicyCommand.self, Doctor.self]
    )
}
