#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import Synchronization

/// Where a log goes and how it is kept: the policy's `[audit]` table, or `--audit FILE` over it.
public struct AuditOptions: Sendable, Equatable {
    public var path: String
    public var fsync: AuditSettings.Fsync
    public var keyFile: String?
    public var rotateBytes: Int?

    public init(path: String, fsync: AuditSettings.Fsync = .batch, keyFile: String? = nil, rotateBytes: Int? = nil) {
        self.path = path
        self.fsync = fsync
        self.keyFile = keyFile
        self.rotateBytes = rotateBytes
    }

    /// The policy's settings with `path` (from `--audit`) over its own; nil when neither names a file.
    public init?(_ settings: AuditSettings?, path override: String?) {
        guard let path = override ?? settings?.path else { return nil }
        self.init(path: path, fsync: settings?.fsync ?? .batch, keyFile: settings?.keyFile,
                  rotateBytes: settings?.rotateMB.map { $0 << 20 })
    }
}

/// An append-only JSONL audit log whose every line carries `prev`, the SHA-256 (or, with a key,
/// HMAC-SHA256) of the line before it. One writer per file per process, shared by every session
/// (`shared`); writers in other processes take the same `flock` around each line and pick the
/// chain up where the file ends. A line that cannot be written makes the log fail closed: every
/// later `append` and `check` throws, so nothing more proceeds.
public final class AuditLog: Sendable {
    public let path: String
    private let writer: Mutex<Writer>

    private static let open = Mutex<[String: AuditLog]>([:])

    /// The process's writer for `options.path`, opened at first use and shared by every session
    /// after (the first opener's options hold).
    public static func shared(_ options: AuditOptions) throws(AuditFailure) -> AuditLog {
        let path = options.path.hasPrefix("/") ? options.path : currentDirectory() + "/" + options.path
        let key = OS.normalizedPath(path)
        let result = open.withLock { logs -> Result<AuditLog, AuditFailure> in
            if let log = logs[key] { return .success(log) }
            do throws(AuditFailure) {
                var resolved = options
                resolved.path = key
                let log = try AuditLog(resolved)
                logs[key] = log
                return .success(log)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    init(_ options: AuditOptions) throws(AuditFailure) {
        path = options.path
        writer = Mutex(try Writer(options))
    }

    /// Appends one event: `seq`, `ts`, `session` (when given), `kind`, then `shared` (members every
    /// line of a session carries, serialized once), then `fields`, then `prev`.
    public func append(_ kind: String, session: String?, shared: AuditMembers = AuditMembers(),
                       _ fields: [(String, JSONValue)]) throws(AuditFailure) {
        try writer.withLock { writer throws(AuditFailure) in try writer.append(kind, session: session, shared, fields) }
    }

    /// Throws once the log has failed: nothing more may proceed.
    public func check() throws(AuditFailure) {
        if let failure = writer.withLock({ $0.failure }) { throw failure }
    }

    /// Forces what was written to disk (`fsync = "batch"` does at most every 100 ms otherwise).
    public func flush() throws(AuditFailure) {
        try writer.withLock { writer throws(AuditFailure) in try writer.flush() }
    }

    private static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buffer, buffer.count) != nil else { return "." }
        return String(cString: buffer)
    }
}

/// Members that every line of a session carries, serialized once: `,"key":value` each.
public struct AuditMembers: Sendable {
    let serialized: [UInt8]

    public init(_ members: [(String, JSONValue)] = []) {
        var bytes: [UInt8] = []
        for (key, value) in members { Writer.member(key, value, into: &bytes) }
        serialized = bytes
    }
}

/// The chain's start: the `prev` of a log's first line.
let genesis = String(repeating: "0", count: 64)

/// How a chain digests a line: plain SHA-256, or HMAC-SHA256 with the key.
struct ChainDigest: Sendable {
    let key: HMACSHA256?

    var name: String { key == nil ? "sha256" : "hmac-sha256" }

    func callAsFunction(_ line: some Collection<UInt8>) -> String {
        if let key { return key.code(line).hexText }
        return SHA256.hash(line).hexText
    }

    /// The key file's bytes (a trailing newline dropped); at least 16 of them.
    static func load(_ path: String?) throws(AuditFailure) -> ChainDigest {
        guard let path else { return ChainDigest(key: nil) }
        var bytes: [UInt8]
        do { bytes = try OS.readFile(path, limit: 4096) } catch {
            throw AuditFailure("cannot read the audit key_file \(path): \(OS.errorText(error.errno))")
        }
        while bytes.last == UInt8(ascii: "\n") || bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard bytes.count >= 16 else {
            throw AuditFailure("the audit key_file \(path) holds \(bytes.count) bytes; a key needs at least 16 "
                + "(make one with: head -c 32 /dev/urandom | base64 > \(path))")
        }
        return ChainDigest(key: HMACSHA256(key: bytes))
    }
}

/// The state of one log file's writer; every method runs under the log's mutex.
struct Writer {
    let options: AuditOptions
    let digest: ChainDigest
    private var fd: Int32 = -1
    /// Where this writer believes the file ends; another process's lines move it.
    private var size = 0
    private var seq = 0
    private var prev = genesis
    private(set) var failure: AuditFailure?
    private var lastSync: UInt64 = 0
    private var unsynced = false
    /// The last line read says another writer rotated the file: move to the new one.
    private var rotatedAway = false

    static let batchNanoseconds: UInt64 = 100_000_000

    init(_ options: AuditOptions) throws(AuditFailure) {
        self.options = options
        digest = try ChainDigest.load(options.keyFile)
        try reopen()
        try locked { _ throws(AuditFailure) in }
    }


    mutating func append(_ kind: String, session: String?, _ shared: AuditMembers, _ fields: [(String, JSONValue)]) throws(AuditFailure) {
        if let failure { throw failure }
        do throws(AuditFailure) {
            try locked { writer throws(AuditFailure) in
                try writer.rotateIfDue()
                try writer.write(kind, session: session, shared: shared, fields)
            }
        } catch {
            failure = error
            throw error
        }
    }

    mutating func flush() throws(AuditFailure) {
        guard unsynced, failure == nil else { return }
        do { try OS.syncData(fd) } catch {
            failure = fail("cannot sync", error)
            throw failure!
        }
        unsynced = false
        lastSync = OS.now()
    }

    // MARK: Internals

    /// Opens `options.path`; the next `locked` takes the chain up where the file ends (or
    /// starts it in a new file).
    private mutating func reopen() throws(AuditFailure) {
        if fd >= 0 { OS.close(fd) }
        // Never through a symlink, and only a regular file: /dev/null or a FIFO would take the
        // lines and keep nothing.
        do { fd = try OS.open(options.path, flags: O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, mode: 0o600) } catch {
            let hint = error.errno == ENOENT ? "; create its directory first"
                : error.errno == ELOOP ? " (it is a symbolic link; name the file itself)" : ""
            throw fail("cannot open", error, hint: hint)
        }
        guard OS.isRegularFile(fd: fd) else {
            OS.close(fd)
            fd = -1
            throw AuditFailure("the audit log \(options.path) is not a regular file; name a file (it is created if missing)")
        }
        size = -1
    }

    /// Runs `body` holding the file's lock, after catching up with lines other processes wrote,
    /// following a rotation one of them made, and starting the chain in a new file.
    private mutating func locked(_ body: (inout Writer) throws(AuditFailure) -> Void) throws(AuditFailure) {
        while true {
            var links = 1
            do throws(SystemError) {
                try OS.lockExclusive(fd)
                let status = try OS.fileStatus(fd)
                links = status.links
                if links > 0, status.size != size { try catchUp(to: status.size) }
            } catch {
                OS.unlock(fd)
                throw fail("cannot read", error)
            }
            guard links > 0 else {
                OS.unlock(fd)
                throw AuditFailure("the audit log \(options.path) was removed while in use; nothing more is audited")
            }
            if rotatedAway {
                OS.unlock(fd)
                rotatedAway = false
                try reopen()
                continue
            }
            let fd = self.fd
            defer {
                OS.unlock(fd)
                for old in retired { OS.close(old) }
                retired = []
            }
            if size == 0 { try write("audit.start", session: nil, startFields(continuing: nil)) }
            try body(&self)
            return
        }
    }

    /// Reads the file's last line: its `seq`, its digest as the next `prev`, and whether it says
    /// the file was rotated (then the writer moves to the new file).
    private mutating func catchUp(to end: Int) throws(SystemError) {
        size = end
        guard end > 0 else { return }
        let window = min(end, 1 << 20)
        var tail = try OS.read(fd, at: end - window, count: window)
        if tail.last != UInt8(ascii: "\n") {
            // A writer died mid-line: end that line, so the next one starts on its own. The torn
            // fragment stays in the chain (verify names it).
            try OS.writeAll(fd, [UInt8(ascii: "\n")])
            size += 1
            tail.append(UInt8(ascii: "\n"))
        }
        let body = tail.dropLast()
        let start = body.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? body.startIndex
        let line = body[start...]
        prev = digest(line)
        if let event = try? JSONValue.parse(line) {
            seq = event["seq"]?.intValue ?? seq + 1
            rotatedAway = event["kind"]?.stringValue == "audit.rotated"
        } else {
            seq += 1
        }
    }

    private func startFields(continuing previous: String?) -> [(String, JSONValue)] {
        [("chain", .string(digest.name)), ("continues", previous.map { .string($0) } ?? .null)]
    }

    /// Moves a full file aside as `<path>.<N>` (the next free number) and carries the chain into
    /// a new file; called holding the old file's lock. The new file appears at `path` in one
    /// rename, its `audit.start` already written, so no writer ever finds `path` missing or empty;
    /// writers still on the old file find `audit.rotated` at its end and follow.
    private mutating func rotateIfDue() throws(AuditFailure) {
        guard let limit = options.rotateBytes, size >= limit else { return }
        var number = 1
        while OS.fileExists("\(options.path).\(number)") { number += 1 }
        let archive = "\(options.path).\(number)"
        let temporary = "\(options.path).new-\(getpid())"
        do { try OS.link(options.path, to: archive) } catch { throw fail("cannot rotate", error) }
        try write("audit.rotated", session: nil, [("next", .string(Self.baseName(options.path)))])
        try flush()
        let new: Int32
        do { new = try OS.open(temporary, flags: O_RDWR | O_APPEND | O_CREAT | O_TRUNC, mode: 0o600) } catch {
            throw fail("cannot start a new file for", error)
        }
        retired.append(fd)
        fd = new
        size = 0
        try write("audit.start", session: nil, startFields(continuing: Self.baseName(archive)))
        try flush()
        do { try OS.rename(temporary, to: options.path) } catch { throw fail("cannot rotate", error) }
    }

    /// Descriptors of rotated-away files, closed once their lock is released.
    private var retired: [Int32] = []

    static func baseName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }

    /// Writes one line at the end of the file (the lock held); a failed write is cut back off.
    /// The line's bytes are put together directly (no JSON tree): this is on every call's path.
    private mutating func write(_ kind: String, session: String?, shared: AuditMembers = AuditMembers(),
                                _ fields: [(String, JSONValue)]) throws(AuditFailure) {
        var line: [UInt8] = []
        line.reserveCapacity(256 + shared.serialized.count)
        line += #"{"seq":"#.utf8
        line += String(seq + 1).utf8
        line += #","ts":""#.utf8
        line += OS.timestamp().utf8
        line.append(UInt8(ascii: "\""))
        if let session { Self.member("session", .string(session), into: &line) }
        Self.member("kind", .string(kind), into: &line)
        line += shared.serialized
        for (key, value) in fields { Self.member(key, value, into: &line) }
        line += #","prev":""#.utf8
        line += prev.utf8
        line += #""}"#.utf8
        let lineDigest = digest(line)
        line.append(UInt8(ascii: "\n"))
        do {
            try OS.writeAll(fd, line)
        } catch {
            try? OS.truncate(fd, to: size)
            throw fail("cannot write", error)
        }
        size += line.count
        seq += 1
        prev = lineDigest
        unsynced = true
        switch options.fsync {
        case .always: try flush()
        case .batch where OS.now() - lastSync >= Self.batchNanoseconds: try flush()
        case .batch, .never: break
        }
    }

    /// `,"key":value`
    static func member(_ key: String, _ value: JSONValue, into line: inout [UInt8]) {
        line.append(UInt8(ascii: ","))
        JSONValue.string(key).serialize(into: &line)
        line.append(UInt8(ascii: ":"))
        value.serialize(into: &line)
    }

    private func fail(_ what: String, _ error: SystemError, hint: String = "") -> AuditFailure {
        AuditFailure("\(what) the audit log \(options.path): \(OS.errorText(error.errno))\(hint)")
    }
}
