// The file capability on a real directory tree, through the broker: with openat2 and with the
// O_NOFOLLOW walk that stands in where openat2 is missing.
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol

/// /tmp/capsule-file-XXXX with in/ (readable), out/ (writable) and a secret beside them.
final class Tree {
    let path: String
    init() throws {
        var template = Array("/tmp/capsule-file-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: errno) }
        path = String(cString: made)
        for directory in ["in", "in/sub", "out"] { mkdir("\(path)/\(directory)", 0o755) }
        try write("in/a.txt", "alpha\n")
        try write("in/sub/b.csv", "1,2\n")
        try write("in/.env", "TOKEN=x\n")
        try write("secret.txt", "top secret\n")
        symlink("\(path)/secret.txt", "\(path)/in/absolute-link")
        symlink("../secret.txt", "\(path)/in/relative-link")
        symlink("a.txt", "\(path)/in/inner-link")
        mkfifo("\(path)/in/fifo", 0o644)
    }

    func write(_ name: String, _ text: String) throws {
        let fd = open("\(path)/\(name)", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw SystemError("open", errno: errno) }
        defer { close(fd) }
        try OS.writeAll(fd, text)
    }

    func read(_ name: String) -> String? {
        (try? OS.readFile("\(path)/\(name)", limit: 1 << 20)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `walk` resolves paths by the fallback walk even where openat2 works.
    func broker(level: String = "standard", extra: String = "", walk: Bool = false) throws -> Broker {
        let policy = try PolicyLoader.parse("""
            level = "\(level)"
            [capabilities.file]
            read = ["\(path)/in"]
            \(level == "restricted" ? "" : "write = [\"\(path)/out\"]")
            \(extra)
            """, file: "p.toml")
        return Broker(policy: policy, extra: [FileCapability(policy.capabilities.file!, beneath: Beneath(walkOnly: walk))])
    }

    deinit {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = ["/bin/rm", "-rf", path].map { (text: String) in strdup(text) } + [nil]
        if posix_spawn(&pid, "/bin/rm", nil, nil, argv, nil) == 0 { var status: Int32 = 0; waitpid(pid, &status, 0) }
        for pointer in argv { free(pointer) }
    }
}

@Suite(.serialized) struct FileCapabilityTests {
    func read(_ broker: Broker, _ path: String) async -> CapabilityReply {
        await call(broker, "file", "read_bytes", ["path": .string(path)])
    }

    @Test(arguments: [false, true]) func readsInsideTheRoot(walk: Bool) async throws {
        let tree = try Tree()
        let broker = try tree.broker(walk: walk)
        #expect(await read(broker, "\(tree.path)/in/a.txt").value?.bytesValue == Array("alpha\n".utf8))
        #expect(await read(broker, "a.txt").value?.bytesValue == Array("alpha\n".utf8), "relative to the first root")
        #expect(await read(broker, "\(tree.path)/in/sub/b.csv").value?.bytesValue == Array("1,2\n".utf8))
        let names = await call(broker, "file", "list", ["path": .string("\(tree.path)/in")])
        #expect(names.value == ["a.txt", "absolute-link", "fifo", "inner-link", "relative-link", "sub"], "the secret is not listed: \(names)")
        let missing = await read(broker, "\(tree.path)/in/nothing")
        #expect(missing.exception == "OSError")
        #expect(await call(broker, "file", "exists", ["path": .string("\(tree.path)/in/nothing")]).value == false)
        #expect(await call(broker, "file", "exists", ["path": .string("\(tree.path)/in/a.txt")]).value == true)
        let stat = await call(broker, "file", "stat", ["path": .string("\(tree.path)/in/a.txt")]).value
        #expect(stat?["size"] == 6 && stat?["kind"] == "file")
    }

    @Test(arguments: [false, true]) func escapesAreDenied(walk: Bool) async throws {
        let tree = try Tree()
        let broker = try tree.broker(walk: walk)
        for path in ["\(tree.path)/in/../secret.txt", "../secret.txt", "sub/../../secret.txt", "\(tree.path)/secret.txt", "/etc/passwd",
                     "\(tree.path)/in/absolute-link", "\(tree.path)/in/relative-link", "\(tree.path)/in/.env", "/proc/self/root/etc/passwd"] {
            let reply = await read(broker, path)
            #expect(reply.exception == "CapabilityDenied", "\(path): \(reply)")
        }
        #expect(await read(broker, "\(tree.path)/in/fifo").message.contains("not a regular file"), "a FIFO is never opened")
    }

    @Test func anInnerSymlinkIsFollowedByOpenat2() async throws {
        let tree = try Tree()
        #expect(await read(try tree.broker(), "\(tree.path)/in/inner-link").value?.bytesValue == Array("alpha\n".utf8))
    }

    @Test func theDenialsSayWhy() async throws {
        let tree = try Tree()
        let broker = try tree.broker()
        #expect(await read(broker, "/etc/passwd").message
            == "'/etc/passwd' is outside the roots of [capabilities.file] (\(tree.path)/in, \(tree.path)/out)")
        #expect(await read(broker, "\(tree.path)/in/../secret.txt").message.hasPrefix("'\(tree.path)/in/../secret.txt' leads outside the root \(tree.path)/in"))
        #expect(await read(broker, "\(tree.path)/in/.env").message.contains("looks like a secret"))
    }

    @Test func aSecretNamedExactlyByIncludeIsReadable() async throws {
        let tree = try Tree()
        let broker = try tree.broker(extra: "include = [\"**\", \".env\"]")
        #expect(await read(broker, "\(tree.path)/in/.env").value?.bytesValue == Array("TOKEN=x\n".utf8))
        let wildcard = try tree.broker(extra: "include = [\".e*\"]")
        #expect(await read(wildcard, "\(tree.path)/in/.env").exception == "CapabilityDenied")
    }

    @Test func includeAndExcludeGlobs() async throws {
        let tree = try Tree()
        let broker = try tree.broker(extra: "include = [\"*.csv\"]\nexclude = [\"sub/private/**\"]")
        #expect(await read(broker, "\(tree.path)/in/a.txt").message.contains("matches no include glob"))
        #expect(await read(broker, "\(tree.path)/in/sub/b.csv").value != nil)
        #expect(await call(broker, "file", "list", ["path": .string("\(tree.path)/in")]).value == ["sub"], "directories stay navigable")
    }

    @Test(arguments: [false, true]) func writesStayInWriteRootsAndNeverFollowSymlinks(walk: Bool) async throws {
        let tree = try Tree()
        let broker = try tree.broker(walk: walk)
        let out = "\(tree.path)/out"
        #expect(await call(broker, "file", "write_bytes", ["path": .string("\(out)/r.txt"), "data": "one"]).value == 3)
        #expect(await call(broker, "file", "append", ["path": .string("\(out)/r.txt"), "data": .bytes(Array(" two".utf8))]).value == 4)
        #expect(tree.read("out/r.txt") == "one two")
        #expect(await call(broker, "file", "mkdir", ["path": .string("\(out)/x/y"), "parents": true]).value == .null)
        #expect(await call(broker, "file", "mkdir", ["path": .string("\(out)/x/y")]).value == .null, "an existing directory is fine")
        #expect(await call(broker, "file", "delete", ["path": .string("\(out)/x/y")]).value == .null)
        #expect(await call(broker, "file", "delete", ["path": .string("\(out)/r.txt")]).value == .null)
        #expect(tree.read("out/r.txt") == nil)
        symlink("\(tree.path)/secret.txt", "\(out)/trap")
        let trap = await call(broker, "file", "write_bytes", ["path": .string("\(out)/trap"), "data": "gotcha"])
        #expect(trap.exception == "CapabilityDenied", "\(trap)")
        #expect(tree.read("secret.txt") == "top secret\n", "the symlink's target is untouched")
        for path in ["\(tree.path)/in/new.txt", "\(out)/../secret.txt", "/tmp/elsewhere.txt"] {
            #expect(await call(broker, "file", "write_bytes", ["path": .string(path), "data": "x"]).exception == "CapabilityDenied", "\(path)")
        }
        #expect(tree.read("secret.txt") == "top secret\n")
        #expect(await call(broker, "file", "write_bytes", ["path": .string("\(out)/.env"), "data": "x"]).exception == "CapabilityDenied",
                "secret-looking names are not written either")
    }

    @Test func readsStopAtMaxBytes() async throws {
        let tree = try Tree()
        let broker = try tree.broker(extra: "max_bytes = 4")
        let reply = await read(broker, "\(tree.path)/in/a.txt")
        #expect(reply.message.contains("larger than the 4 bytes a read may return"), "\(reply)")
    }
}
