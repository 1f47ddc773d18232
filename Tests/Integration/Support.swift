// Shared machinery of the escape suite: run hostile Python through the real sandbox (in-process
// through `Session`, or through the `capsule` binary) and read back what the code reported.
//
// Every hostile snippet prints one line per attempt, `<label> BLOCKED <errno>`,
// `<label> SUCCEEDED <value>` or `<label> FAILED <exception>` (see `Python.prelude`), and the tests
// assert the exact line, so an attempt that unexpectedly works fails the test.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox

// MARK: What one execution produced

struct Transcript: Sendable, CustomStringConvertible {
    var stdout = ""
    var stderr = ""
    /// `ename: evalue` of each uncaught exception.
    var errors: [String] = []
    var outcome: ExecutionOutcome = .workerEnded(exitCode: nil, signal: nil)

    var lines: [String] { stdout.split(separator: "\n").map(String.init) }

    /// The first stdout line that starts with `prefix` followed by a space (or is exactly `prefix`).
    func line(_ prefix: String) -> String? {
        lines.first { $0 == prefix || $0.hasPrefix(prefix + " ") }
    }

    /// The words after `prefix` on its line.
    func words(_ prefix: String) -> [String]? {
        line(prefix).map { $0.dropFirst(prefix.count).split(separator: " ").map(String.init) }
    }

    /// The address-space limit (MiB) the sandbox must have, from `Python.memoryCgroupProbe`'s line:
    /// under a memory cgroup a backstop of 4 × memory_mb plus a default thread stack (8 MiB) per
    /// task, without one memory_mb itself (limits.c).
    func expectedAddressSpaceMB(_ limits: Limits = Limits()) -> Int? {
        switch line("MEMORY-CGROUP") {
        case "MEMORY-CGROUP True": 4 * limits.memoryMB + 8 * limits.maxProcesses
        case "MEMORY-CGROUP False": limits.memoryMB
        default: nil
        }
    }

    var finishedCleanly: Bool {
        if case .finished(status: .ok, exitCode: nil, duration: _, errorName: nil) = outcome { return true }
        return false
    }

    var description: String {
        "outcome: \(outcome)\n--- stdout ---\n\(stdout)\n--- stderr ---\n\(stderr)\n--- errors ---\n\(errors.joined(separator: "\n"))"
    }

    /// `label BLOCKED <errno>` with one of `errnos`, and no attempt anywhere reported success.
    func expectBlocked(_ label: String, _ errnos: Int32..., sourceLocation: SourceLocation = #_sourceLocation) {
        let found = line(label)
        let words = found?.split(separator: " ").map(String.init) ?? []
        let allowed = errnos.map(String.init)
        #expect(words.count == 3 && words[1] == "BLOCKED" && allowed.contains(words[2]),
                "\(label): expected `\(label) BLOCKED \(allowed.joined(separator: "|"))`, got `\(found ?? "nothing")`\n\(self)",
                sourceLocation: sourceLocation)
        expectNoSuccess(sourceLocation: sourceLocation)
    }

    func expectNoSuccess(sourceLocation: SourceLocation = #_sourceLocation) {
        let successes = lines.filter { $0.contains(" SUCCEEDED") }
        #expect(successes.isEmpty, "an attempt succeeded: \(successes)\n\(self)", sourceLocation: sourceLocation)
    }

    func expectLine(_ exact: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(lines.contains(exact), "expected the line `\(exact)`\n\(self)", sourceLocation: sourceLocation)
    }

    func expectFinishedCleanly(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(finishedCleanly, "expected a clean finish\n\(self)", sourceLocation: sourceLocation)
    }
}

// MARK: Python helpers

enum Python {
    /// `attempt(label, fn)` prints exactly one line saying what happened.
    static let prelude = #"""
        import os, sys, errno
        def attempt(label, fn):
            try:
                value = fn()
            except OSError as e:
                print(label, "BLOCKED", e.errno)
            except BaseException as e:
                print(label, "FAILED", type(e).__name__, str(e).replace("\n", " ")[:200])
            else:
                print(label, "SUCCEEDED", repr(value).replace("\n", " ")[:200])

        """#

    /// Prints `MEMORY-CGROUP True` when the code runs in its session's memory cgroup (v1 or v2),
    /// `MEMORY-CGROUP False` where the host gave it none.
    static let memoryCgroupProbe = #"""
        print("MEMORY-CGROUP", any("/capsule/s" in line.split(":", 2)[2] for line in open("/proc/self/cgroup").read().split()
                                   if ":memory:" in line or line.startswith("0::")))

        """#

    /// `syscall(nr, *args)` through libc, printing `RESULT <return value> <errno>`.
    static let syscallPrelude = #"""
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        buf = ctypes.create_string_buffer(4096)
        buf2 = ctypes.create_string_buffer(4096)
        def _arg(x):
            if isinstance(x, int):
                return ctypes.c_long(x)
            if isinstance(x, bytes):
                return ctypes.c_char_p(x)
            return x
        def syscall(nr, *args):
            ctypes.set_errno(0)
            result = _libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
            print("RESULT", result, ctypes.get_errno() if result == -1 else 0, flush=True)
            return result

        """#

    /// `machine_code(code_bytes)` returns a callable running the bytes (RWX anonymous mapping).
    static let machineCodePrelude = #"""
        import ctypes, mmap
        def machine_code(code):
            page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(code)
            address = ctypes.addressof(ctypes.c_char.from_buffer(page))
            function = ctypes.CFUNCTYPE(ctypes.c_long)(address)
            function.page = page  # keep the mapping alive
            return function
        def imm32(value):
            return (value & 0xffffffff).to_bytes(4, "little")

        """#
}

// MARK: Running code in the sandbox

enum Sandboxed {
    static func policy(_ configure: (inout Limits) -> Void = { _ in }) -> Policy {
        var limits = Limits()
        configure(&limits)
        return Policy(level: .sandbox, limits: limits)
    }

    static func location() throws -> WorkerLocation { try WorkerLocation.find() }

    static func start(_ policy: Policy = policy()) throws -> Session {
        try Session(policy: policy, location: try location())
    }

    /// Runs `code` and collects everything it produced.
    static func run(_ code: String, in session: Session) -> Transcript {
        var transcript = Transcript()
        transcript.outcome = session.execute(code, wantResult: false) { event in
            switch event {
            case .stream(.stdout, let text): transcript.stdout += text
            case .stream(.stderr, let text): transcript.stderr += text
            case .streamData(.stdout, let bytes): transcript.stdout += String(decoding: bytes, as: UTF8.self)
            case .streamData(.stderr, let bytes): transcript.stderr += String(decoding: bytes, as: UTF8.self)
            case .error(let name, let value, _): transcript.errors.append("\(name): \(value)")
            case .result, .inputRequest, .display, .inputRefused, .approvalRequest: break
            }
            return nil
        }
        return transcript
    }

    /// A new session for one destructive case; always torn down.
    static func withSession<T>(_ policy: Policy = policy(), _ body: (Session) throws -> T) throws -> T {
        let session = try start(policy)
        defer { session.shutdown(grace: 1) }
        return try body(session)
    }

    /// One execution in a fresh session.
    static func runFresh(_ code: String, policy: Policy = policy()) throws -> Transcript {
        try withSession(policy) { run(code, in: $0) }
    }

    /// The supervisor is fine: a brand-new session starts and runs code.
    static func expectNewSessionWorks(sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let transcript = try runFresh("print('fresh', 6 * 7)")
            #expect(transcript.lines == ["fresh 42"] && transcript.finishedCleanly,
                    "a new session did not work\n\(transcript)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("a new session could not start: \(error)", sourceLocation: sourceLocation)
        }
    }
}

/// A session reused by the cases of one group that cannot harm it; restarted if a case ends it.
final class SharedSession: Sendable {
    private let state = Mutex<Session?>(nil)
    let policy: Policy

    init(policy: Policy = Sandboxed.policy()) { self.policy = policy }

    func run(_ code: String) throws -> Transcript {
        try state.withLock { session throws -> Transcript in
            if session?.isAlive != true {
                session = try Sandboxed.start(policy)
            }
            return Sandboxed.run(code, in: session!)
        }
    }

    static let filesystem = SharedSession()
    static let syscalls = SharedSession()
    static let misc = SharedSession()
}

// MARK: Host-side helpers

enum Host {
    static let repository: String = {
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) } // Tests/Integration/Support.swift
        return path
    }()

    /// The directory of the running test executable (`.build/<triple>/debug`).
    static var buildDirectory: String {
        let exe = OS.executablePath() ?? ""
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)])
    }

    static func readText(_ path: String) -> String? {
        guard let bytes = try? OS.readFile(path, limit: 1 << 20) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func writeFile(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemError("open \(path)", errno: errno) }
        defer { close(fd) }
        try OS.writeAll(fd, text)
    }

    static func readFile(_ path: String) throws -> String {
        String(decoding: try OS.readFile(path, limit: 1 << 20), as: UTF8.self)
    }

    /// A `--report` file's outcome: its first three members (exit_code, kind, reason) as JSON,
    /// with a newline; what follows them (duration, usage, ...) RunReportTests checks.
    static func reportOutcome(_ path: String) throws -> String {
        let text = try readFile(path)
        guard let members = (try? JSONValue.parse(Array(text.utf8)))?.objectValue else { return text }
        return String(decoding: JSONValue.object(Array(members.prefix(3))).serialized(), as: UTF8.self) + "\n"
    }

    static func temporaryDirectory() throws -> String {
        var template = Array("/tmp/capsule-escape-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("mkdtemp", errno: errno) }
        return String(cString: made)
    }

    static func removeTree(_ path: String) {
        guard let dir = opendir(path) else { return }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." { continue }
            unlink("\(path)/\(name)")
        }
        closedir(dir)
        rmdir(path)
    }

    /// Starts `path` and waits for it; its exit status (128 + signal when killed).
    static func spawnAndWait(_ path: String, _ arguments: [String] = []) -> Int32 {
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, path, nil, nil, argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return decodeWaitStatus(status)
    }

    static func decodeWaitStatus(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// Host pids whose real uid is `uid` (from /proc/<pid>/status).
    static func processes(ofUID uid: UInt32) -> [Int32] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var found: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            guard let pid = Int32(name), let status = readText("/proc/\(pid)/status") else { continue }
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) else { continue }
            let ids = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst()
            if ids.first.flatMap({ UInt32($0) }) == uid { found.append(pid) }
        }
        return found
    }

    static func sleep(seconds: Double) {
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) < 0 && errno == EINTR { request = remaining }
    }

    /// True when `fd` has something to read (a pending connection for a listener) right now.
    static func isReadable(_ fd: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0 && entry.revents & Int16(POLLIN) != 0
    }
}

/// A TCP listener on 127.0.0.1 (ephemeral port), owned by the test process.
final class TCPListener {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { close(fd); throw SystemError("bind/listen", errno: errno) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = UInt16(bigEndian: address.sin_port)
    }

    /// Connects from the test process itself (a positive control that the listener works).
    func connectFromHost() -> Int32 {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return client
    }

    deinit { close(fd) }
}

/// A listening AF_UNIX socket of the test process: at a path, or abstract (name starting with NUL).
final class UnixListener {
    let fd: Int32
    let name: String
    let abstract: Bool

    init(name: String, abstract: Bool) throws {
        self.name = name
        self.abstract = abstract
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = (abstract ? [0] : []) + Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() where index < raw.count { raw[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        if !abstract { unlink(name) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { close(fd); throw SystemError("bind/listen \(name)", errno: errno) }
    }

    deinit {
        close(fd)
        if !abstract { unlink(name) }
    }
}

// MARK: The capsule binary

struct CLIRun: CustomStringConvertible {
    var status: Int32 = -1
    /// The first 64 KiB of stdout (as text and as bytes), and how many bytes there were in all.
    var stdout = ""
    var stdoutData: [UInt8] = []
    var stdoutBytes = 0
    var stderr = ""
    /// Peak resident memory of capsule (and anything it waited for), from wait4.
    var maxResidentMB = 0.0
    var seconds = 0.0

    var stderrLines: [String] { stderr.split(separator: "\n").map(String.init) }

    var description: String {
        "status \(status), \(stdoutBytes) stdout bytes, max RSS \(maxResidentMB) MB, \(seconds) s\n--- stdout ---\n\(stdout.prefix(2000))\n--- stderr ---\n\(stderr.suffix(4000))"
    }
}

/// Spawn attributes as a shell starts a program: no signal blocked or ignored (the test runner's
/// threads block most), with `flags` added (POSIX_SPAWN_SETSID, say).
func withShellLikeSpawnAttributes<T>(flags: Int32 = 0, _ body: (inout posix_spawnattr_t) -> T) -> T {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var signals = sigset_t()
    sigemptyset(&signals)
    posix_spawnattr_setsigmask(&attributes, &signals)
    for number in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&signals, number) }
    posix_spawnattr_setsigdefault(&attributes, &signals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | flags))
    return body(&attributes)
}

enum CLI {
    static var executable: String { "\(Host.buildDirectory)/capsule" }

    /// `LLVM_PROFILE_FILE=…` for a capsule process a test starts: beside the test run's own
    /// profiles when it has them (`swift test --enable-code-coverage` merges every .profraw there,
    /// so the CLI's lines count), a pool of four files that processes merge into as they exit;
    /// otherwise nowhere (a coverage build would leave default.profraw in the working directory).
    static let profileSetting: String = {
        guard let own = OS.environment("LLVM_PROFILE_FILE"), let slash = own.lastIndex(of: "/") else {
            return "LLVM_PROFILE_FILE=/dev/null"
        }
        // A directory of their own: SwiftPM merges its codecov directory and gives up on one bad
        // file (a process killed while it merged its counters into the pool); scripts/test merges
        // these itself, skipping what cannot be read.
        return "LLVM_PROFILE_FILE=\(own[..<slash])-subprocesses/subprocess-%4m.profraw"
    }()

    /// Runs capsule with `arguments`; `via` names a program (and its arguments) that starts it,
    /// such as setpriv to run it as another user. Standard input is /dev/null, or `stdin` (a
    /// descriptor the caller keeps); `signal` is sent to capsule once stdout shows its text.
    /// Through /usr/bin/time, whose report is capsule's own peak RSS: the rusage of a process
    /// posix_spawn'ed from here starts from this test runner's peak (the child shares our memory
    /// until it execs, and Linux keeps that high-water mark).
    static func runMeasuringMemory(_ arguments: [String]) throws -> CLIRun {
        var run = try run(arguments, via: ["/usr/bin/time", "-f", "capsule-peak-rss-kb %M"])
        var lines = run.stderr.split(separator: "\n", omittingEmptySubsequences: false)
        if let index = lines.lastIndex(where: { $0.hasPrefix("capsule-peak-rss-kb ") }) {
            run.maxResidentMB = (Double(lines[index].dropFirst("capsule-peak-rss-kb ".count)) ?? .infinity) / 1024
            lines.remove(at: index)
            lines.removeAll { $0.hasPrefix("Command exited with non-zero status") || $0.hasPrefix("Command terminated by signal") }
            run.stderr = lines.joined(separator: "\n")
        } else {
            run.maxResidentMB = .infinity
        }
        return run
    }

    /// With standard input read from the file at `stdin`.
    static func run(_ arguments: [String], stdin path: String, timeout: Double = 60) throws -> CLIRun {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(path)", errno: errno) }
        defer { close(fd) }
        return try run(arguments, timeout: timeout, stdin: fd)
    }

    static func run(_ arguments: [String], via wrapper: [String] = [], timeout: Double = 60,
                    stdin: Int32? = nil, signal: (number: Int32, when: String)? = nil,
                    environment extra: [String] = []) throws -> CLIRun {
        // Socket pairs rather than pipes: created close-on-exec atomically, so no other test's child
        // inherits a write end (which would hold our reads open).
        let (outRead, outWrite) = try OS.socketPair()
        let (errRead, errWrite) = try OS.socketPair()
        let out = [outRead, outWrite]
        let err = [errRead, errWrite]

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, 0) } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        let path = wrapper.first ?? executable
        let argv: [UnsafeMutablePointer<CChar>?] = (wrapper + [executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        // Another user (through `via`) could not write the test run's profiles: nowhere, then.
        let environment: [UnsafeMutablePointer<CChar>?] = ([wrapper.isEmpty ? CLI.profileSetting : "LLVM_PROFILE_FILE=/dev/null"] + extra)
            .map { strdup($0) } + [nil]
        defer { for pointer in environment { free(pointer) } }
        var pid: pid_t = 0
        let started = OS.now()
        let spawned = withShellLikeSpawnAttributes { posix_spawn(&pid, path, &actions, &$0, argv, environment) }
        close(out[1])
        close(err[1])
        defer { close(out[0]); close(err[0]) }
        guard spawned == 0 else { throw SystemError("posix_spawn \(path)", errno: spawned) }

        var run = CLIRun()
        var stdoutBytes: [UInt8] = []
        var stderrBytes: [UInt8] = []
        var open: Set<Int32> = [out[0], err[0]]
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let deadline = started + UInt64(timeout * 1e9)
        var killed = false
        var signalled = signal == nil
        while !open.isEmpty {
            if !killed && OS.now() > deadline {
                kill(pid, SIGKILL)
                killed = true
            }
            var fds = open.sorted().map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if poll(&fds, nfds_t(fds.count), 250) < 0 { continue }
            for entry in fds where entry.revents != 0 {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(entry.fd, $0.baseAddress, $0.count) }
                if count <= 0 {
                    if count < 0 && errno == EINTR { continue }
                    open.remove(entry.fd)
                } else if entry.fd == out[0] {
                    run.stdoutBytes += count
                    if stdoutBytes.count < 1 << 16 { stdoutBytes += buffer[0..<min(count, (1 << 16) - stdoutBytes.count)] }
                    if !signalled, let signal, String(decoding: stdoutBytes, as: UTF8.self).contains(signal.when) {
                        kill(pid, signal.number)
                        signalled = true
                    }
                } else {
                    if stderrBytes.count < 1 << 20 { stderrBytes += buffer[0..<count] }
                }
            }
        }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        run.status = Host.decodeWaitStatus(status)
        run.maxResidentMB = Double(usage.ru_maxrss) / 1024
        run.seconds = Double(OS.now() - started) / 1e9
        run.stdout = String(decoding: stdoutBytes, as: UTF8.self)
        run.stdoutData = stdoutBytes
        run.stderr = String(decoding: stderrBytes, as: UTF8.self)
        if killed { run.stderr += "\n[test harness: killed after \(timeout) s]" }
        return run
    }
}

/// Runs blocking work on a thread of its own: a test that waits many seconds on a child process
/// (pip) must not hold one of Swift's shared threads, which the async tests beside it need (this
/// machine has two).
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let started = OS.startThread { continuation.resume(with: Result { try body() }) }
        if !started { continuation.resume(throwing: SystemError("pthread_create", errno: EAGAIN)) }
    }
}
