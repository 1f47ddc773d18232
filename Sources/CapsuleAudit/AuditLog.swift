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
/// (`shared`); writers in other processes take the same `flock` and pick the chain up where the
/// file ends. A writer that seems to be alone keeps the lock for up to 10 ms (a lease, see
/// `Writer`), and a keeper thread ends leases and syncs batches on time. A line that cannot be
/// written makes the log fail closed: every later `append` and `check` throws, so nothing more
/// proceeds.
public final class AuditLog: Sendable {
    public let path: String
    private let writer: Mutex<Writer>
    private let keeper = Keeper()

    private static let open = Mutex<[String: AuditLog]>([:])

    /// The process's writer for `options.path`, opened at first use and shared by every session
    /// after (the first opener's options hold).
    public static func shared(_ options: AuditOptions) throws(AuditFailure) -> AuditLog {
        let path = options.path.hasPrefix("/") ? options.path : (OS.currentDirectory() ?? ".") + "/" + options.path
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
        keeper.work = { [weak self] now, force in self?.maintain(now, force: force) }
    }

    /// A log no session holds any more (the process's own are kept): its descriptor goes, and
    /// with it any lease on the file's lock.
    deinit {
        writer.withLock { $0.close() }
    }

    /// Appends one event: `seq`, `ts`, `session` (when given), `kind`, then `shared` (members every
    /// line of a session carries, serialized once), then `fields`, then `prev`.
    public func append(_ kind: String, session: String?, shared: AuditMembers = AuditMembers(),
                       _ fields: [(String, JSONValue)]) throws(AuditFailure) {
        try append(kind, session: session, shared: shared) { line in
            for (key, value) in fields { line.member(key, value) }
        }
    }

    /// Appends one event whose own members `members` writes into the line (the way every
    /// capability call's line is written: nothing built first).
    public func append(_ kind: String, session: String?, shared: AuditMembers = AuditMembers(),
                       members: (inout AuditLineBuilder) -> Void) throws(AuditFailure) {
        let due = try writer.withLock { writer throws(AuditFailure) in try writer.append(kind, session: session, shared, members) }
        if let due { keeper.wake(by: due) }
    }

    /// The chain's head: the last line's sequence number and the SHA-256 (or HMAC) that the next
    /// line's `prev` will carry.
    public var head: (seq: Int, digest: String) { writer.withLock { ($0.seq, $0.prev.hexText) } }

    /// Throws once the log has failed: nothing more may proceed.
    public func check() throws(AuditFailure) {
        if let failure = writer.withLock({ $0.failure }) { throw failure }
    }

    /// Whether lines were written that are not yet forced to disk (for tests).
    var unsynced: Bool { writer.withLock { $0.unsynced } }

    /// Forces what was written to disk (`fsync = "batch"` does at most every 100 ms otherwise).
    public func flush() throws(AuditFailure) {
        try writer.withLock { writer throws(AuditFailure) in try writer.flush() }
    }

    /// The keeper's round: ends a lease that is due, and syncs a batch that is; returns when the
    /// next thing falls due. The sync itself runs outside the writer's lock, on a copy of the
    /// descriptor, so no line waits for the disk.
    private func maintain(_ now: UInt64, force: Bool) -> UInt64? {
        let (sync, next) = writer.withLock { $0.maintain(now, force: force) }
        guard let sync else { return next }
        defer { OS.close(sync.fd) }
        do { try OS.syncData(sync.fd) } catch {
            writer.withLock { $0.failed(sync.failure(error)) }
        }
        return next
    }
}

/// Members that every line of a session carries, serialized once: `,"key":value` each.
public struct AuditMembers: Sendable {
    let serialized: [UInt8]

    public init(_ members: [(String, JSONValue)] = []) {
        var line = AuditLineBuilder(reusing: [])
        for (key, value) in members { line.member(key, value) }
        serialized = line.bytes
    }
}

private func earliest(_ a: UInt64?, _ b: UInt64?) -> UInt64? {
    guard let a else { return b }
    guard let b else { return a }
    return min(a, b)
}

/// The chain's start: the `prev` of a log's first line.
let genesis = String(repeating: "0", count: 64)
let genesisDigest = [UInt8](repeating: 0, count: 32)

/// How a chain digests a line: plain SHA-256, or HMAC-SHA256 with the key.
struct ChainDigest: Sendable {
    let key: HMACSHA256?

    var name: String { key == nil ? "sha256" : "hmac-sha256" }

    func callAsFunction(_ line: some Collection<UInt8>) -> String { bytes(Array(line)).hexText }

    /// The 32 bytes, as a line's `prev` carries them in hexadecimal.
    func bytes(_ line: [UInt8]) -> [UInt8] {
        if let key { return key.code(line) }
        return SHA256.hash(line)
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
    private(set) var seq = 0
    /// The digest of the file's last line.
    private(set) var prev = genesisDigest
    /// The last line's bytes, kept for the next line to reuse.
    private var buffer: [UInt8] = []
    private(set) var failure: AuditFailure?
    private var lastSync: UInt64 = 0
    private(set) var unsynced = false
    /// The last line read says another writer rotated the file: move to the new one.
    private var rotatedAway = false
    /// While this process seems to be the file's only writer, it keeps the file's lock past a
    /// line (a lease), so the lines that follow skip taking and releasing it: two system calls
    /// less on each capability call's way to its answer. A lease lasts until `leaseEnd`, at most
    /// `leaseNanoseconds`, and the keeper ends it on time even when no line follows. After one
    /// the lock is taken line by line for `leaseGapNanoseconds`, so a writer in another process
    /// that waits for it gets it; and once another writer's lines are seen, no lease is taken for
    /// `othersNanoseconds`.
    private var leaseEnd: UInt64?
    private var leaseEnded: UInt64 = 0
    private var othersWrote: UInt64?

    static let batchNanoseconds: UInt64 = 100_000_000
    static let leaseNanoseconds: UInt64 = 10_000_000
    static let leaseGapNanoseconds: UInt64 = 500_000
    static let othersNanoseconds: UInt64 = 1_000_000_000

    init(_ options: AuditOptions) throws(AuditFailure) {
        self.options = options
        digest = try ChainDigest.load(options.keyFile)
        try reopen()
        _ = try locked(lease: false) { _ throws(AuditFailure) in }
    }

    /// Writes one line; returns when the keeper must next act (a lease taken, a batch to sync).
    mutating func append(_ kind: String, session: String?, _ shared: AuditMembers,
                         _ members: (inout AuditLineBuilder) -> Void) throws(AuditFailure) -> UInt64? {
        if let failure { throw failure }
        let wasUnsynced = unsynced
        let leaseTaken: UInt64?
        do throws(AuditFailure) {
            leaseTaken = try locked(lease: true) { writer throws(AuditFailure) in
                try writer.rotateIfDue()
                try writer.write(kind, session: session, shared: shared, members)
            }
        } catch {
            failed(error)
            throw error
        }
        return earliest(leaseTaken, wasUnsynced ? nil : syncDue)
    }

    /// Nothing more is written, and the file's lock is not kept for lines that never come.
    mutating func failed(_ error: AuditFailure) {
        if failure == nil { failure = error }
        releaseLock(at: OS.now())
    }

    mutating func close() {
        closeRetired()
        if fd >= 0 { OS.close(fd) }
        fd = -1
        leaseEnd = nil
    }

    /// A sync the keeper is to make of `fd`, a copy of the log's descriptor.
    struct Sync {
        let fd: Int32
        let path: String
        func failure(_ error: SystemError) -> AuditFailure {
            AuditFailure("cannot sync the audit log \(path): \(OS.errorText(error.errno))")
        }
    }

    /// Ends the lease if it is due, and hands out the batch to sync if that is; returns the sync
    /// and when the keeper is next needed.
    mutating func maintain(_ now: UInt64, force: Bool) -> (Sync?, UInt64?) {
        if let end = leaseEnd, force || now >= end { releaseLock(at: now) }
        var sync: Sync?
        if options.fsync == .batch, unsynced, failure == nil, force || now >= lastSync + Self.batchNanoseconds {
            let copy = dup(fd)
            if copy >= 0 {
                sync = Sync(fd: copy, path: options.path)
                unsynced = false
                lastSync = now
            }
        }
        return (sync, earliest(leaseEnd, syncDue))
    }

    /// When the keeper must sync what is written (`fsync = "batch"`, lines not yet on disk).
    private var syncDue: UInt64? { options.fsync == .batch && unsynced ? lastSync + Self.batchNanoseconds : nil }

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
    /// following a rotation one of them made, and starting the chain in a new file. Keeps the
    /// lock as a lease where `lease` and nothing speaks against it; returns the lease's end.
    private mutating func locked(lease: Bool, _ body: (inout Writer) throws(AuditFailure) -> Void) throws(AuditFailure) -> UInt64? {
        var now = OS.now()
        if let end = leaseEnd, now >= end { releaseLock(at: now) }
        while true {
            var links = 1
            do throws(SystemError) {
                if leaseEnd == nil {
                    try OS.lockExclusive(fd)
                    now = OS.now()
                }
                // Even under a lease: the file's removal must stop the very next call.
                let status = try OS.fileStatus(fd)
                links = status.links
                if links > 0, status.size != size {
                    if size >= 0 { othersWrote = now }
                    try catchUp(to: status.size)
                }
            } catch {
                releaseLock(at: now)
                throw fail("cannot read", error)
            }
            guard links > 0 else {
                releaseLock(at: now)
                throw AuditFailure("the audit log \(options.path) was removed while in use; nothing more is audited")
            }
            if rotatedAway {
                releaseLock(at: now)
                rotatedAway = false
                try reopen()
                continue
            }
            do throws(AuditFailure) {
                if size == 0 { try start(continuing: nil) }
                try body(&self)
            } catch {
                releaseLock(at: now)
                closeRetired()
                throw error
            }
            if !retired.isEmpty {
                // Rotated: the lock held was the old file's, and goes with its descriptor.
                releaseLock(at: now)
                closeRetired()
                return nil
            }
            if leaseEnd != nil { return nil }
            let othersQuiet = othersWrote.map { now - $0 >= Self.othersNanoseconds } ?? true
            if lease, othersQuiet, now - leaseEnded >= Self.leaseGapNanoseconds {
                leaseEnd = now + Self.leaseNanoseconds
                return leaseEnd
            }
            OS.unlock(fd)
            return nil
        }
    }

    /// Gives up the file's lock, held for a line or as a lease.
    private mutating func releaseLock(at now: UInt64) {
        OS.unlock(fd)
        if leaseEnd != nil {
            leaseEnd = nil
            leaseEnded = now
        }
    }

    private mutating func closeRetired() {
        for old in retired { OS.close(old) }
        retired = []
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
        prev = digest.bytes(Array(line))
        if let event = try? JSONValue.parse(line) {
            seq = event["seq"]?.intValue ?? seq + 1
            rotatedAway = event["kind"]?.stringValue == "audit.rotated"
        } else {
            seq += 1
        }
    }

    /// The chain's first line in a new file: which digest it uses, and the file it continues.
    private mutating func start(continuing previous: String?) throws(AuditFailure) {
        let name = digest.name
        try write("audit.start", session: nil) { line in
            line.member("chain", string: name)
            line.member("continues", previous.map { .string($0) } ?? .null)
        }
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
        let next = Self.baseName(options.path)
        try write("audit.rotated", session: nil) { $0.member("next", string: next) }
        try flush()
        let new: Int32
        do { new = try OS.open(temporary, flags: O_RDWR | O_APPEND | O_CREAT | O_TRUNC, mode: 0o600) } catch {
            throw fail("cannot start a new file for", error)
        }
        retired.append(fd)
        fd = new
        size = 0
        try start(continuing: Self.baseName(archive))
        try flush()
        do { try OS.rename(temporary, to: options.path) } catch { throw fail("cannot rotate", error) }
    }

    /// Descriptors of rotated-away files, closed once their lock is released.
    private var retired: [Int32] = []

    static func baseName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }

    /// Writes one line at the end of the file (the lock held); a failed write is cut back off.
    private mutating func write(_ kind: String, session: String?, shared: AuditMembers = AuditMembers(),
                                _ members: (inout AuditLineBuilder) -> Void) throws(AuditFailure) {
        var line = AuditLineBuilder(reusing: buffer)
        buffer = []
        line.raw(#"{"seq":"#)
        line.decimal(seq + 1)
        line.raw(#","ts":""#)
        line.timestamp()
        line.raw("\"")
        if let session { line.member("session", string: session) }
        line.member("kind", string: kind)
        line.append(shared)
        members(&line)
        line.raw(#","prev":""#)
        line.hex(prev)
        line.raw(#""}"#)
        let lineDigest = digest.bytes(line.bytes)
        line.bytes.append(UInt8(ascii: "\n"))
        defer { buffer = line.bytes }
        do {
            try OS.writeAll(fd, line.bytes)
        } catch {
            try? OS.truncate(fd, to: size)
            throw fail("cannot write", error)
        }
        size += line.bytes.count
        seq += 1
        prev = lineDigest
        unsynced = true
        // "batch": the keeper syncs at most 100 ms after, off every call's path.
        if options.fsync == .always { try flush() }
    }

    private func fail(_ what: String, _ error: SystemError, hint: String = "") -> AuditFailure {
        AuditFailure("\(what) the audit log \(options.path): \(OS.errorText(error.errno))\(hint)")
    }
}
