#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CapsuleOS

/// `capsule serve`: runs capsule-server, the program beside capsule that holds the HTTP stack
/// (so that capsule's own start never loads it), with these arguments.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve sessions over HTTP, with a bearer token (capsule serve --help says more)."
    )

    @Argument(parsing: .captureForPassthrough, help: "capsule-server's options: --host, --port, --token-file, --max-level, ...")
    var arguments: [String] = []

    func run() throws {
        let exe = OS.executablePath() ?? "capsule"
        let server = String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/capsule-server"
        guard OS.isExecutable(server) else {
            throw ValidationError("capsule-server is not beside capsule (\(server)); build it with `swift build --product capsule-server`")
        }
        let argv = ([server] + arguments).map { strdup($0) } + [nil]
        execv(server, argv)
        throw ValidationError("cannot run \(server): \(OS.errorText(errno))")
    }
}
