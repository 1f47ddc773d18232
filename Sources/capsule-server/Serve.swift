// capsule-server: `capsule serve`, in a program of its own, so that the HTTP stack (Hummingbird,
// SwiftNIO) is linked here and never into capsule's cold start. capsule serve runs it with its
// own arguments.
import ArgumentParser
import CapsuleOS
import CapsulePolicy
import CapsuleSandbox
import CapsuleServer

@main
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capsule serve",
        abstract: "Serve sessions over HTTP: create them, run code, stream its events (docs/server.md).",
        discussion: """
            Every /v1 request needs `Authorization: Bearer TOKEN`. The token is CAPSULE_TOKEN, or the \
            token file (made on first start with mode 0600; its path is printed). A client names a \
            level or sends a policy's TOML; either may be at most --max-level.
            """
    )

    @Option(help: "The address to listen on.") var host = "127.0.0.1"
    @Option(help: "The port to listen on (0: any free port, printed).") var port = 8731
    @Option(help: "The token file (default $XDG_CONFIG_HOME/capsule/token or ~/.config/capsule/token).") var tokenFile: String?
    @Option(help: "The highest level a client's session may have.") var maxLevel = "standard"
    @Option(help: "Sessions held at once.") var maxSessions = 64
    @Option(help: "The largest request body read, in bytes.") var maxBodyBytes = 8 << 20
    @Option(help: "An audit log for every session (besides a policy's own [audit] path).") var audit: String?
    @Option(help: "On SIGTERM, the seconds interrupted executions have to end by themselves.") var shutdownGrace = 5.0

    func validate() throws {
        guard Level(rawValue: maxLevel) != nil else {
            throw ValidationError("--max-level `\(maxLevel)` is not a level: \(Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port \(port) is not a port (0 to 65535)") }
        guard shutdownGrace >= 0, shutdownGrace <= 3600 else { throw ValidationError("--shutdown-grace is 0 to 3600 seconds") }
        guard maxSessions > 0, maxBodyBytes > 0 else { throw ValidationError("--max-sessions and --max-body-bytes are at least 1") }
    }

    func run() async throws {
        let path = tokenFile ?? Token.defaultPath()
        var configuration: ServerConfiguration
        let location: WorkerLocation
        do {
            configuration = ServerConfiguration(token: try Token.load(path: path))
            location = try WorkerLocation.find()
        } catch {
            try? OS.writeAll(2, "capsule serve: \(error)\n")
            throw ExitCode(125)
        }
        configuration.host = host
        configuration.port = port
        configuration.maxLevel = Level(rawValue: maxLevel) ?? .standard
        configuration.maxSessions = maxSessions
        configuration.maxBodyBytes = maxBodyBytes
        configuration.auditPath = audit
        configuration.shutdownGrace = shutdownGrace
        let origin = configuration.token.origin
        let host = host
        do {
            try await Server.run(configuration, location: location) { bound in
                try? OS.writeAll(2, "capsule serve: listening on http://\(host):\(bound) (the token: \(origin))\n")
            }
        } catch {
            try? OS.writeAll(2, "capsule serve: \(error)\n")
            throw ExitCode(125)
        }
    }
}
