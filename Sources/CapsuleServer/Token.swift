#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS

/// The bearer token every `/v1` request must carry: `CAPSULE_TOKEN`, else the token file, made
/// on first start (32 random bytes as hexadecimal, mode 0600, its path said on stderr).
public struct Token: Sendable {
    let bytes: [UInt8]
    /// Where it came from, for the start-up line (never the token itself).
    public let origin: String

    public init(_ text: String, origin: String) {
        bytes = Array(text.utf8)
        self.origin = origin
    }

    /// `$XDG_CONFIG_HOME/capsule/token`, or `~/.config/capsule/token`.
    public static func defaultPath(environment: (String) -> String? = OS.environment) -> String {
        let config = environment("XDG_CONFIG_HOME").flatMap { $0.hasPrefix("/") ? $0 : nil }
            ?? (environment("HOME") ?? OS.homeDirectory() ?? "/root") + "/.config"
        return config + "/capsule/token"
    }

    /// The token from the environment, or read from `path`, or made there.
    public static func load(path: String, environment: (String) -> String? = OS.environment) throws(ServerError) -> Token {
        if let given = environment("CAPSULE_TOKEN") {
            guard given.utf8.count >= 16 else { throw .token("CAPSULE_TOKEN is shorter than 16 characters; give a longer one, or unset it to use \(path)") }
            return Token(given, origin: "CAPSULE_TOKEN")
        }
        if OS.fileExists(path) {
            let bytes: [UInt8]
            do { bytes = try OS.readFile(path, limit: 4096) } catch { throw .token("cannot read the token file \(path): \(error)") }
            var info = stat()
            if stat(path, &info) == 0, info.st_mode & 0o077 != 0 {
                throw .token("the token file \(path) may be read by other users (mode \(String(info.st_mode & 0o777, radix: 8))); chmod 600 it")
            }
            let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace
            guard text.utf8.count >= 16 else { throw .token("the token file \(path) holds fewer than 16 characters; remove it to have a new one made") }
            return Token(text, origin: path)
        }
        var generator = SystemRandomNumberGenerator()
        let text = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }.hexText
        do {
            let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            if !directory.isEmpty { try OS.makeDirectories(directory, mode: 0o700) }
            let fd = try OS.open(path, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode: 0o600)
            defer { OS.close(fd) }
            try OS.writeAll(fd, text + "\n")
        } catch {
            throw .token("cannot write a new token to \(path): \(error); set CAPSULE_TOKEN or --token-file")
        }
        return Token(text, origin: path + " (new)")
    }

    /// Whether an `Authorization` header's value is `Bearer <this token>`, in time that does not
    /// depend on where the two differ.
    public func admits(_ authorization: String?) -> Bool {
        guard let authorization, authorization.hasPrefix("Bearer ") else { return false }
        let given = Array(authorization.utf8.dropFirst(7))
        var difference = UInt8(given.count == bytes.count ? 0 : 1)
        for index in 0..<bytes.count { difference |= bytes[index] ^ (index < given.count ? given[index] : 0) }
        return difference == 0
    }
}

extension String {
    var trimmingWhitespace: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[first...last])
    }
}
