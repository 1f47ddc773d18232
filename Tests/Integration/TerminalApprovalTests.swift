// The terminal approver for real: `capsule run` on a pseudo-terminal that is its controlling
// terminal, a person's keys typed into it, and what the screen shows.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS

/// capsule started as a shell starts it on a terminal: in a session of its own whose controlling
/// terminal is the slave of a fresh pty, with fds 0, 1 and 2 on it. The test is the person at the
/// other end (the master): it reads the screen and types.
final class TerminalRun {
    private let master: Int32
    private let pid: pid_t
    private var isOpen = true
    /// Everything capsule and the terminal (echo) wrote so far.
    private(set) var screen: [UInt8] = []
    var text: String { String(decoding: screen, as: UTF8.self) }

    init(_ arguments: [String]) throws {
        // By hand: the C library's posix_openpt is not visible to Swift here.
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard master >= 0 else { throw SystemError("open /dev/ptmx", errno: errno) }
        var unlock: Int32 = 0, number: UInt32 = 0
        guard ioctl(master, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0, ioctl(master, 0x8004_5430 /* TIOCGPTN */, &number) == 0 else {
            close(master)
            throw SystemError("unlocking a pseudo-terminal", errno: errno)
        }
        let name = "/dev/pts/\(number)"

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // After setsid (glibc's posix_spawn runs it first), opening the slave makes it the controlling terminal.
        posix_spawn_file_actions_addopen(&actions, 0, name, O_RDWR, 0)
        posix_spawn_file_actions_adddup2(&actions, 0, 1)
        posix_spawn_file_actions_adddup2(&actions, 0, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([CLI.executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let environment: [UnsafeMutablePointer<CChar>?] = [strdup(CLI.profileSetting), strdup("TERM=xterm"), nil]
        defer { for pointer in environment { free(pointer) } }
        var child: pid_t = 0
        let spawned = withShellLikeSpawnAttributes(flags: 0x80 /* POSIX_SPAWN_SETSID */) {
            posix_spawn(&child, CLI.executable, &actions, &$0, argv, environment)
        }
        guard spawned == 0 else {
            close(master)
            throw SystemError("posix_spawn \(CLI.executable)", errno: spawned)
        }
        pid = child
    }

    deinit {
        if isOpen { close(master) }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// Reads the screen until `text` is on it `count` times (true), or it ends or `seconds` pass (false).
    @discardableResult
    func waitFor(_ text: String, count: Int = 1, seconds: Double = 60) -> Bool {
        let deadline = OS.now() + UInt64(seconds * 1e9)
        while occurrences(of: text) < count {
            guard OS.now() < deadline, readSome(until: deadline) else { return false }
        }
        return true
    }

    /// Reads whatever arrives within `seconds`.
    func watch(seconds: Double) {
        let deadline = OS.now() + UInt64(seconds * 1e9)
        while OS.now() < deadline, readSome(until: deadline) {}
    }

    func type(_ keys: String) {
        try? OS.writeAll(master, keys)
    }

    /// The person closes the terminal (the window): capsule gets SIGHUP.
    func hangUp() {
        close(master)
        isOpen = false
    }

    /// Reads the screen to its end and returns capsule's exit status.
    func finish(seconds: Double = 60) -> Int32 {
        let deadline = OS.now() + UInt64(seconds * 1e9)
        while isOpen && OS.now() < deadline && readSome(until: deadline) {}
        if OS.now() >= deadline { kill(pid, SIGKILL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return Host.decodeWaitStatus(status)
    }

    func occurrences(of text: String) -> Int {
        self.text.ranges(of: text).count
    }

    /// One read; false once the terminal's other side is gone (EIO) or at the deadline.
    private func readSome(until deadline: UInt64) -> Bool {
        var fds = [pollfd(fd: master, events: Int16(POLLIN), revents: 0)]
        let ready = poll(&fds, 1, Int32(max(1, min(250, OS.pollMilliseconds(until: deadline)))))
        if ready <= 0 { return OS.now() < deadline }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let count = buffer.withUnsafeMutableBytes { read(master, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { return true }
        guard count > 0 else { return false }
        screen += buffer[0..<count]
        return true
    }
}

@Suite("capsule binary: approval at the terminal") struct TerminalApprovalTests {
    /// A policy whose env.get waits for approval, and a script that calls it `calls` times
    /// (between `before` and `after`), printing what each call gave.
    private static func setUp(_ tree: HostTree, before: String = "", after: String = "", calls: Int = 1,
                              threads: Bool = false) throws -> (policy: String, script: String) {
        let policy = "\(tree.path)/ask.toml"
        try Host.writeFile(policy, """
            level = "restricted"
            [capabilities.env]
            names = ["LANG"]
            ask = true
            """)
        let script = "\(tree.path)/job.py"
        try Host.writeFile(script, """
            import sys, threading, time
            from capsule import env, CapabilityDenied
            def call(i):
                try:
                    print("answer", i, env.get("LANG"), flush=True)
                except CapabilityDenied as e:
                    print("denied", i, e, flush=True)
            \(before)
            if \(threads ? "True" : "False"):
                workers = [threading.Thread(target=call, args=(i,)) for i in range(\(calls))]
                for w in workers: w.start()
                for w in workers: w.join()
            else:
                for i in range(\(calls)): call(i)
            \(after)
            print("end", flush=True)
            """)
        return (policy, script)
    }

    private static let prompt = "capsule: allow env.get {\"name\":\"LANG\",\"default\":null}? [y/N] "

    @Test func yesApprovesAndNoDeniesWithTheReason() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree, calls: 2)
        let terminal = try TerminalRun(["run", "--policy", policy, script])
        #expect(terminal.waitFor(Self.prompt), "\(terminal.text)")
        terminal.type("y\n")
        #expect(terminal.waitFor(Self.prompt, count: 2), "\(terminal.text)")
        terminal.type("no\n")
        #expect(terminal.waitFor("end\r\n"), "\(terminal.text)")
        #expect(terminal.finish() == 0, "\(terminal.text)")
        #expect(terminal.text.contains("\(Self.prompt)y\r\nanswer 0 None\r\n"), "\(terminal.text)")
        #expect(terminal.text.contains("\(Self.prompt)no\r\ndenied 1 env.get was not approved: the person at the terminal said no\r\n"),
                "\(terminal.text)")
    }

    @Test func noAnswerInTimeDenies() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree)
        let terminal = try TerminalRun(["run", "--policy", policy, "--approval-timeout", "1", script])
        #expect(terminal.waitFor("end\r\n"), "\(terminal.text)")
        #expect(terminal.finish() == 0, "\(terminal.text)")
        #expect(terminal.text.contains("\(Self.prompt)\r\ndenied 0 env.get was not approved: nobody answered within 1 s\r\n"), "\(terminal.text)")
    }

    @Test func endOfInputAtThePromptDenies() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree)
        let terminal = try TerminalRun(["run", "--policy", policy, script])
        #expect(terminal.waitFor(Self.prompt), "\(terminal.text)")
        terminal.type("\u{04}") // ^D
        #expect(terminal.waitFor("end\r\n"), "\(terminal.text)")
        #expect(terminal.finish() == 0, "\(terminal.text)")
        #expect(terminal.text.contains("denied 0 env.get was not approved: the terminal's input ended before anyone answered\r\n"),
                "\(terminal.text)")
    }

    @Test func hangingUpAtThePromptDeniesAndEndsTheRunAsSIGHUPDoes() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree)
        let report = "\(tree.path)/report.json"
        let terminal = try TerminalRun(["run", "--policy", policy, "--report", report, script])
        #expect(terminal.waitFor(Self.prompt), "\(terminal.text)")
        terminal.hangUp()
        #expect(terminal.finish() == 129, "\(terminal.text)")
        #expect(Host.readText(report)?.contains(#""exit_code":129"#) == true, "\(Host.readText(report) ?? "no report")")
    }

    @Test func controlCAtThePromptDeniesAndInterruptsTheCode() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree, calls: 2)
        let terminal = try TerminalRun(["run", "--policy", policy, script])
        #expect(terminal.waitFor(Self.prompt), "\(terminal.text)")
        terminal.type("\u{03}") // ^C
        #expect(terminal.finish() == 130, "\(terminal.text)")
        #expect(!terminal.text.contains("answer ") && !terminal.text.contains("end\r\n"), "\(terminal.text)")
        #expect(terminal.text.contains("KeyboardInterrupt"), "\(terminal.text)")
    }

    @Test func keysTypedBeforeThePromptDoNotAnswerIt() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree, before: #"print("ready", flush=True); time.sleep(2)"#)
        let terminal = try TerminalRun(["run", "--policy", policy, "--approval-timeout", "2", script])
        #expect(terminal.waitFor("ready\r\n"), "\(terminal.text)")
        terminal.type("y\n") // while the code sleeps, before any question
        #expect(terminal.waitFor("end\r\n"), "\(terminal.text)")
        #expect(terminal.finish() == 0, "\(terminal.text)")
        #expect(terminal.text.contains("denied 0 env.get was not approved: nobody answered within 2 s"), "\(terminal.text)")
    }

    @Test func aFakePromptAndConcealedStyleCannotDisguiseTheRealOne() throws {
        let tree = try HostTree()
        // A question of its own on the same line, then text made invisible (SGR 8) and black on black.
        let (policy, script) = try Self.setUp(tree, before: #"sys.stdout.write("capsule: allow display.show {}? [y/N] \x1b[8m\x1b[30;40m"); sys.stdout.flush()"#)
        let terminal = try TerminalRun(["run", "--policy", policy, script])
        #expect(terminal.waitFor(Self.prompt), "\(terminal.text)")
        // The real question starts a line of its own, with the style reset first.
        #expect(terminal.text.contains("\u{1B}[8m\u{1B}[30;40m\r\n\u{1B}[0m\(Self.prompt)"), "\(terminal.text.debugDescription)")
        terminal.type("n\n")
        #expect(terminal.waitFor("end"), "\(terminal.text)")
        #expect(terminal.finish() == 0, "\(terminal.text)")
    }

    @Test func outputWhileThePromptWaitsIsHeldUntilTheAnswer() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree, before: """
            def flood():
                for n in range(3000):
                    print("flood", n, flush=True)
                    time.sleep(0.001)
            flooder = threading.Thread(target=flood)
            flooder.start()
            time.sleep(0.05)
            """, after: "flooder.join()")
        let terminal = try TerminalRun(["run", "--policy", policy, script])
        #expect(terminal.waitFor(Self.prompt), "\(terminal.text)")
        terminal.watch(seconds: 1)
        // Nothing after the question while it waits: it stays the last line, where the cursor is.
        #expect(terminal.text.hasSuffix(Self.prompt), "\(terminal.text.suffix(500))")
        terminal.type("y\n")
        #expect(terminal.waitFor("flood 2999\r\n"), "\(terminal.text.suffix(500))")
        #expect(terminal.finish() == 0, "\(terminal.text.suffix(500))")
        // None of the held output was lost, and it came after the answer.
        let lines = terminal.text.split(separator: "\r\n").filter { $0.hasPrefix("flood ") }
        #expect(lines.count == 3000 && lines.last == "flood 2999", "\(lines.count) lines")
        #expect(terminal.text.contains("\(Self.prompt)y\r\n"), "\(terminal.text.suffix(500))")
    }

    @Test func aSecondThreadsCallWaitsForTheFirstQuestionToBeAnswered() throws {
        let tree = try HostTree()
        let (policy, script) = try Self.setUp(tree, calls: 2, threads: true)
        let terminal = try TerminalRun(["run", "--policy", policy, script])
        #expect(terminal.waitFor(Self.prompt), "\(terminal.text)")
        terminal.watch(seconds: 1)
        #expect(terminal.occurrences(of: Self.prompt) == 1, "\(terminal.text)")
        terminal.type("y\n")
        #expect(terminal.waitFor(Self.prompt, count: 2), "\(terminal.text)")
        terminal.type("n\n")
        #expect(terminal.waitFor("end\r\n"), "\(terminal.text)")
        #expect(terminal.finish() == 0, "\(terminal.text)")
        #expect(terminal.occurrences(of: "answer ") == 1 && terminal.occurrences(of: "the person at the terminal said no") == 1,
                "\(terminal.text)")
        #expect(terminal.text.contains("\(Self.prompt)y\r\n") && terminal.text.contains("\(Self.prompt)n\r\n"), "\(terminal.text)")
    }
}
