// The audit log's writer and verifier on real files: chains, threads, rotation, keys, removal.
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
@testable import CapsuleAudit
import Synchronization

/// A fresh directory, removed afterwards.
final class Scratch {
    let path: String
    init() {
        var template = Array("/tmp/capsule-audit-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }
    deinit {
        var paths: [String] = []
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { paths.append("\(path)/\(name)") }
            }
            closedir(directory)
        }
        for file in paths { unlink(file) }
        rmdir(path)
    }
}

/// Joinable threads, for writers running at once.
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Box: @unchecked Sendable {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
    var threads: [pthread_t] = []
    for index in 0..<count {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box { body(index) })
        pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
}

@Suite struct AuditLogTests {
    let policy = Policy(level: .restricted)

    @Test func aLogStartsItsChainAndEachLineDigestsTheOneBefore() throws {
        let scratch = Scratch()
        let log = try AuditLog(AuditOptions(path: "\(scratch.path)/a.jsonl", fsync: .always))
        try log.append("exec.start", session: "s1", [("execution", "1")])
        try log.append("exec.end", session: "s1", [("status", "ok")])
        let lines = try AuditReader.lines(of: log.path)
        #expect(lines.map(\.kind) == ["audit.start", "exec.start", "exec.end"])
        #expect(lines.map(\.seq) == [1, 2, 3])
        #expect(lines[0].event?["prev"]?.stringValue == String(repeating: "0", count: 64))
        #expect(lines[0].event?["chain"]?.stringValue == "sha256")
        #expect(lines[2].event?["prev"]?.stringValue == ChainDigest(key: nil)(lines[1].bytes))
        #expect(lines[1].session == "s1" && lines[0].session == nil)
        // RFC 3339 UTC with microseconds.
        let ts = lines[1].event?["ts"]?.stringValue ?? ""
        #expect(ts.count == 27 && ts.hasSuffix("Z") && ts.dropFirst(19).first == ".", "\(ts)")
        let pattern = ts.map { $0.isNumber ? "d" : String($0) }.joined()
        #expect(pattern == "dddd-dd-ddTdd:dd:dd.ddddddZ", "\(ts)")
        let written = Double(AuditTime.microseconds(ts) ?? 0) / 1e6
        #expect(abs(written - Double(time(nil))) < 600, "the wall clock, not some other: \(ts)")
        #expect(try AuditVerifier.verify([log.path]).problem == nil)
    }

    @Test func manyThreadsAndTwoWritersOfOneFileKeepOneChain() throws {
        let scratch = Scratch()
        let path = "\(scratch.path)/a.jsonl"
        // Two writers stand for two processes: each takes the file's lock and catches up.
        let first = try AuditLog(AuditOptions(path: path, fsync: .never))
        let second = try AuditLog(AuditOptions(path: path, fsync: .batch))
        concurrently(8) { index in
            let log = index % 2 == 0 ? first : second
            for n in 0..<200 { try? log.append("cap.call", session: "s\(index)", [("n", .number(Double(n)))]) }
        }
        let lines = try AuditReader.lines(of: path)
        #expect(lines.count == 1 + 8 * 200)
        #expect(lines.allSatisfy { $0.event != nil && $0.terminated })
        #expect(lines.map { $0.seq ?? 0 } == Array(1...lines.count))
        let verification = try AuditVerifier.verify([path])
        #expect(verification.problem == nil, "\(String(describing: verification.problem))")
        // Each thread's own lines are in the order it wrote them.
        for index in 0..<8 {
            let mine = lines.filter { $0.session == "s\(index)" }.compactMap { $0.event?["n"]?.intValue }
            #expect(mine == Array(0..<200))
        }
    }

    /// A writer alone keeps the file's lock past a line (a lease); another process must still get
    /// it within moments, whether or not more lines follow, and a dropped log lets go at once.
    @Test func aLeaseOnTheLockEndsOnTimeAndAnotherWriterGetsIn() throws {
        let scratch = Scratch()
        let path = "\(scratch.path)/a.jsonl"
        let log = try AuditLog(AuditOptions(path: path, fsync: .batch))
        try log.append("exec.start", session: "s", [])
        let other = try OS.open(path, flags: O_RDWR | O_APPEND)
        defer { OS.close(other) }
        // The keeper ends the lease though no line follows.
        let deadline = OS.now() + 5_000_000_000
        var locked = false
        while !locked && OS.now() < deadline {
            locked = flock(other, LOCK_EX | LOCK_NB) == 0
            if !locked { usleep(1000) }
        }
        #expect(locked, "another writer never got the log's lock")
        // While the other holds it, a line waits for it, then goes after the other's.
        try OS.writeAll(other, "{\"other\":true}\n")
        let appended = Mutex(false)
        concurrently(2) { index in
            if index == 0 {
                try? log.append("exec.end", session: "s", [])
                appended.withLock { $0 = true }
            } else {
                usleep(100_000)
                #expect(!appended.withLock { $0 }, "a line was written while another process held the lock")
                flock(other, LOCK_UN)
            }
        }
        let lines = try AuditReader.lines(of: path)
        #expect(lines.map(\.kind) == ["audit.start", "exec.start", nil, "exec.end"])
        #expect(lines[3].event?["prev"]?.stringValue == ChainDigest(key: nil)(lines[2].bytes))
        // The batch reaches the disk without another line to carry it.
        let synced = OS.now() + 5_000_000_000
        while log.unsynced && OS.now() < synced { usleep(10_000) }
        #expect(!log.unsynced)
    }

    @Test func aDroppedLogLetsGoOfTheLock() throws {
        let scratch = Scratch()
        let path = "\(scratch.path)/a.jsonl"
        try AuditLog(AuditOptions(path: path)).append("exec.start", session: "s", [])
        let other = try OS.open(path, flags: O_RDWR | O_APPEND)
        defer { OS.close(other) }
        #expect(flock(other, LOCK_EX | LOCK_NB) == 0)
    }

    @Test func oneWriterPerFileIsSharedByTheProcess() throws {
        let scratch = Scratch()
        let a = try AuditLog.shared(AuditOptions(path: "\(scratch.path)/x.jsonl"))
        let b = try AuditLog.shared(AuditOptions(path: "\(scratch.path)/./x.jsonl"))
        #expect(a === b)
    }

    @Test func rotationCarriesTheChainIntoTheNextFile() throws {
        let scratch = Scratch()
        let path = "\(scratch.path)/a.jsonl"
        let log = try AuditLog(AuditOptions(path: path, rotateBytes: 2000))
        for n in 0..<60 { try log.append("cap.call", session: "s", [("n", .number(Double(n))), ("pad", .string(String(repeating: "x", count: 40)))]) }
        let files = AuditReader.chainFiles(path)
        #expect(files.count >= 3, "\(files)")
        #expect(files.first == "\(path).1" && files.last == path)
        let archive = try AuditReader.lines(of: "\(path).1")
        #expect(archive.last?.kind == "audit.rotated")
        let live = try AuditReader.lines(of: path)
        #expect(live.first?.kind == "audit.start")
        #expect(live.first?.event?["continues"]?.stringValue == "a.jsonl.\(files.count - 1)")
        // The whole chain holds across the files, and every event is there once.
        #expect(try AuditVerifier.verify([path]).problem == nil)
        let numbers = try AuditReader.events([path]).compactMap { $0["kind"]?.stringValue == "cap.call" ? $0["n"]?.intValue : nil }
        #expect(numbers == Array(0..<60))
        // The live file alone is checked from where it continues.
        #expect(try AuditVerifier.verify([path, path]).problem != nil) // the same file twice is no chain
        let alone = try AuditVerifier.verify(["\(path).2"])
        #expect(alone.problem == nil)
    }

    @Test func aRemovedLogFailsClosed() throws {
        let scratch = Scratch()
        let path = "\(scratch.path)/a.jsonl"
        let log = try AuditLog(AuditOptions(path: path))
        try log.append("exec.start", session: "s", [])
        unlink(path)
        #expect(throws: AuditFailure("the audit log \(path) was removed while in use; nothing more is audited")) {
            try log.append("exec.end", session: "s", [])
        }
        // Sticky: nothing proceeds afterwards, even once a file is back.
        _ = try AuditLog(AuditOptions(path: path))
        #expect(throws: AuditFailure.self) { try log.check() }
    }

    @Test func aTornLastLineIsEndedAndTheChainGoesOn() throws {
        let scratch = Scratch()
        let path = "\(scratch.path)/a.jsonl"
        try AuditLog(AuditOptions(path: path)).append("exec.start", session: "s", [])
        let fd = try OS.open(path, flags: O_WRONLY | O_APPEND)
        try OS.writeAll(fd, #"{"seq":3,"ts":"2026"#)
        OS.close(fd)
        let log = try AuditLog(AuditOptions(path: path))
        try log.append("exec.end", session: "s", [])
        let lines = try AuditReader.lines(of: path)
        #expect(lines.count == 4 && lines[2].event == nil && lines[3].kind == "exec.end")
        #expect(lines[3].event?["prev"]?.stringValue == ChainDigest(key: nil)(lines[2].bytes))
        let verification = try AuditVerifier.verify([path])
        #expect(verification.problem?.line == 3, "\(String(describing: verification.problem))")
    }

    @Test func onlyARegularFileNamedDirectlyTakesTheLog() throws {
        let scratch = Scratch()
        #expect(throws: AuditFailure("the audit log /dev/null is not a regular file; name a file (it is created if missing)")) {
            try AuditLog(AuditOptions(path: "/dev/null"))
        }
        symlink("/tmp/elsewhere.jsonl", "\(scratch.path)/link.jsonl")
        #expect(throws: AuditFailure("cannot open the audit log \(scratch.path)/link.jsonl: Too many levels of symbolic links (it is a symbolic link; name the file itself)")) {
            try AuditLog(AuditOptions(path: "\(scratch.path)/link.jsonl"))
        }
    }

    @Test func keysMustBeLongEnoughAndReadable() throws {
        let scratch = Scratch()
        let short = "\(scratch.path)/short.key"
        let fd = try OS.open(short, flags: O_WRONLY | O_CREAT)
        try OS.writeAll(fd, "abc\n")
        OS.close(fd)
        #expect(throws: AuditFailure.self) { try AuditLog(AuditOptions(path: "\(scratch.path)/a.jsonl", keyFile: short)) }
        #expect(throws: AuditFailure("cannot read the audit key_file /nonexistent.key: No such file or directory")) {
            try AuditLog(AuditOptions(path: "\(scratch.path)/a.jsonl", keyFile: "/nonexistent.key"))
        }
    }

    @Test func sessionEventsNameTheSessionAndPolicyAndRedactSecrets() throws {
        let scratch = Scratch()
        let log = try AuditLog(AuditOptions(path: "\(scratch.path)/a.jsonl"))
        let audit = SessionAudit(log: log, policy: policy, session: "feedfacefeedface")
        let fetch = Method("fetch", level: .standard, parameters: [
            Parameter("url", .string), Parameter("headers", .object, audit: .headers), Parameter("body", .any),
        ], doc: "")
        let arguments = Arguments(values: ["url": "https://example.com/x", "headers": ["Authorization": "Bearer s3cret", "X-My-Token": "t0k", "Accept": "text/html"],
                                           "body": "the body text"])
        try audit.call(AuditRecord(capability: "net", method: "fetch", summary: AuditRecord.summary(of: arguments, method: fetch),
                                   decision: .allowed, reason: nil, bytes: 12, seconds: 0.0015))
        try audit.approval(ApprovalRequest(capability: "file", method: "read_bytes", summary: ["path": "/a"]), decision: .denied("no"))
        try audit.event(AuditEvent(.sessionEnd, [("executions", 0)]))
        let lines = try AuditReader.lines(of: log.path)
        let call = try #require(lines[1].event)
        #expect(call["session"]?.stringValue == "feedfacefeedface")
        #expect(call["policy"]?.stringValue == "restricted" && call["policy_sha256"]?.stringValue == policy.digest)
        #expect(call["args"] == ["url": "https://example.com/x", "headers": ["Authorization": "<redacted>", "X-My-Token": "<redacted>", "Accept": "text/html"],
                                 "body": "<13 bytes>"])
        #expect(call["decision"]?.stringValue == "allowed" && call["ms"]?.doubleValue == 1.5)
        #expect(lines[2].kind == "approval" && lines[2].event?["decision"]?.stringValue == "denied" && lines[2].event?["reason"]?.stringValue == "no")
        #expect(lines[3].kind == "session.end")
        // The same rules digest the same wherever they came from.
        var elsewhere = policy
        elsewhere.origin = "/etc/other.toml"
        #expect(elsewhere.digest == policy.digest)
        elsewhere.limits.timeoutSeconds += 1
        #expect(elsewhere.digest != policy.digest)
    }

    @Test func auditOptionsComeFromThePolicyWithTheFlagOverItsPath() {
        let settings = AuditSettings(path: "/var/log/a.jsonl", fsync: .always, keyFile: "/k", rotateMB: 2)
        #expect(AuditOptions(settings, path: nil) == AuditOptions(path: "/var/log/a.jsonl", fsync: .always, keyFile: "/k", rotateBytes: 2 << 20))
        #expect(AuditOptions(settings, path: "b.jsonl")?.path == "b.jsonl")
        #expect(AuditOptions(nil, path: nil) == nil)
        #expect(AuditOptions(nil, path: "c.jsonl") == AuditOptions(path: "c.jsonl"))
    }
}
