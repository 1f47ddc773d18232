import ArgumentParser
import CapsuleRuntime

@main
struct Capsule: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capsule",
        abstract: "Run untrusted Python in a Linux sandbox that reaches the world only through granted capabilities.",
        version: CapsuleVersion.current,
        subcommands: [Run.self, Exec.self, PolicyCommand.self, Doctor.self]
    )
}
