// What a new user hits first: failures that must never be silent or misreported. Each test runs
// the real `capsule` binary (or a real session) and asserts what the user sees.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime

@Suite("Newcomer failures: the report file") struct ReportPathTests {
    /// A script that leaves a trace when it runs, so a test can tell that it did not.
    func script(in scratch: CLITests.Scratch) throws -> String {
        try scratch.file("trace.py", "print('RAN')\nimport sys\nsys.exit(3)\n")
    }

    func expectRefusedBeforeRunning(_ run: CLIRun, _ line: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(run.status == ExitStatus.capsuleError, "\(run)", sourceLocation: sourceLocation)
        #expect(run.stdout.isEmpty, "the code must not run\n\(run)", sourceLocation: sourceLocation)
        #expect(run.stderrLines == [line], "one clear sentence, once\n\(run)", sourceLocation: sourceLocation)
    }

    @Test func aMissingDirectory() throws {
        let scratch = try CLITests.Scratch()
        let run = try CLI.run(["run", "--report", "\(scratch.path)/no/such/report.json", try script(in: scratch)])
        expectRefusedBeforeRunning(run, "capsule: cannot write the report \(scratch.path)/no/such/report.json: the directory \(scratch.path)/no/such does not exist")
    }

    @Test(arguments: ["/dev/stdout", "/dev/stderr", "/dev/fd/1"])
    func theCodesOwnOutputStreams(_ path: String) throws {
        let run = try CLI.run(["exec", "--report", path, "-c", "print('RAN')"])
        expectRefusedBeforeRunning(run, "capsule: the report cannot go to \(path), where the code's own output goes and could forge it; give a file name")
    }

    @Test func aSymbolicLink() throws {
        let scratch = try CLITests.Scratch()
        let target = "\(scratch.path)/real.json"
        #expect(symlink(target, "\(scratch.path)/link.json") == 0)
        let run = try CLI.run(["run", "--report", "\(scratch.path)/link.json", try script(in: scratch)])
        expectRefusedBeforeRunning(run, "capsule: the report \(scratch.path)/link.json is a symbolic link (to \(target)); capsule writes a report only to a regular file named directly, so give that path")
        #expect(!OS.fileExists(target), "nothing was written through the link")
        unlink("\(scratch.path)/link.json")
    }

    @Test func aWritableReportKeepsTheCodesStatus() throws {
        let scratch = try CLITests.Scratch()
        let report = "\(scratch.path)/report.json"
        let run = try CLI.run(["run", "--report", report, try script(in: scratch)])
        #expect(run.status == 3, "\(run)")
        #expect(run.stdout == "RAN\n", "\(run)")
        #expect(try Host.reportOutcome(report) == "{\"exit_code\":3,\"kind\":\"exit\",\"reason\":null}\n")
    }
}

@Suite("Newcomer failures: signals to capsule") struct StopSignalTests {
    static let waitsInTry = "import time\ntry:\n    print('READY', flush=True)\n    time.sleep(30)\nfinally:\n    print('FINALLY', flush=True)\n"

    @Test(arguments: [(SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")])
    func aStopSignalGivesTheCodeTheGraceOfAFirstInterrupt(_ signal: Int32, _ name: String) throws {
        let scratch = try CLITests.Scratch()
        let report = "\(scratch.path)/report.json"
        let run = try CLI.run(["exec", "--report", report, "-c", Self.waitsInTry], signal: (signal, "READY\n"))
        #expect(run.status == 128 + signal, "as timeout(1) and a shell report a process ended by \(name)\n\(run)")
        #expect(run.stdout == "READY\nFINALLY\n", "the code's finally block ran\n\(run)")
        let reason = "terminated by \(name) (the code got KeyboardInterrupt, as for ^C)"
        #expect(run.stderrLines.last == "capsule: \(reason)", "\(run)")
        #expect(!run.stderr.contains("twice"), "\(run)")
        #expect(try Host.reportOutcome(report) == "{\"exit_code\":\(128 + signal),\"kind\":\"terminated\",\"reason\":\"\(reason)\"}\n")
    }

    @Test func aKeyboardInterruptTheCodeRaisesIsItsOwn() throws {
        // CPython prints the traceback and exits 130 (it re-raises SIGINT); capsule interrupted nothing.
        let scratch = try CLITests.Scratch()
        let report = "\(scratch.path)/report.json"
        let run = try CLI.run(["exec", "--report", report, "-c", "raise KeyboardInterrupt"])
        #expect(run.status == 130, "\(run)")
        #expect(run.stderrLines.last == "KeyboardInterrupt", "the traceback is the whole story\n\(run)")
        #expect(!run.stderrLines.contains { $0.hasPrefix("capsule:") && !$0.hasPrefix("capsule: note:") }, "\(run)")
        #expect(try Host.reportOutcome(report) == "{\"exit_code\":130,\"kind\":\"exit\",\"reason\":null}\n")
    }
}

@Suite("Newcomer failures: clipped text is marked") struct ClipMarkerTests {
    /// The events of one execution in a fresh session.
    static func events(_ code: String, wantResult: Bool = false) throws -> [SessionEvent] {
        var events: [SessionEvent] = []
        _ = try Sandboxed.withSession { session in
            session.execute(code, wantResult: wantResult) { event in
                events.append(event)
                return nil
            }
        }
        return events
    }

    @Test func aHugeExceptionMessageKeepsItsStartAndSaysWhatWasCut() throws {
        let events = try Self.events(#"raise ValueError("a" * 3_000_000 + "END")"#)
        guard case .error(let ename, let evalue, let traceback)? = events.last else {
            Issue.record("expected an error, got \(events)")
            return
        }
        #expect(ename == "ValueError")
        // The message alone: its first 256 Ki characters, then the marker with the exact count.
        #expect(evalue.hasPrefix("aaaa") && evalue.hasSuffix("a\n[truncated: \(3_000_003 - (256 << 10)) characters omitted]\n"),
                "\(evalue.suffix(80))")
        // The traceback: the last line is cut the same way, and keeps the exception's name.
        let last = try #require(traceback.last)
        #expect(last.hasPrefix("ValueError: aaaa"), "\(last.prefix(40))")
        let marker = try #require(last.split(separator: "\n").last.map(String.init))
        #expect(marker.hasPrefix("[truncated: ") && marker.hasSuffix(" characters omitted]"), "\(marker)")
        let omitted = Int(marker.dropFirst("[truncated: ".count).prefix { $0.isNumber }) ?? 0
        let kept = last.utf8.count - marker.utf8.count - 2 // two newlines: before and after the marker
        #expect(kept + omitted == "ValueError: ".count + 3_000_003, "every character is kept or counted")
        #expect(traceback.joined().count < 600 << 10)
    }

    @Test func aHugeResultIsMarkedTheSameWay() throws {
        let events = try Self.events(#""b" * 3_000_000"#, wantResult: true)
        guard case .result(let bundle)? = events.last, let text = bundle["text/plain"] else {
            Issue.record("expected a result, got \(events.count) events")
            return
        }
        #expect(text.hasPrefix("'bbb"))
        #expect(text.hasSuffix("b\n[truncated: \(3_000_002 - (1 << 20)) characters omitted]\n"), "\(text.suffix(80))")
    }
}

@Suite("Newcomer failures: a script over the frame limit") struct FrameLimitTests {
    @Test func isRefusedInTheUsersTerms() throws {
        let scratch = try CLITests.Scratch()
        // 17 MiB of a string literal: more than the default 16 MiB frame once encoded.
        let source = "data = '" + String(repeating: "a", count: 17 << 20) + "'\nprint(len(data))\n"
        let script = try scratch.file("big.py", source)
        let run = try CLI.run(["run", script])
        #expect(run.status == ExitStatus.capsuleError, "\(run)")
        #expect(run.stdout.isEmpty, "\(run)")
        let line = try #require(run.stderrLines.last, "\(run)")
        #expect(line.hasPrefix("capsule: \(script) is \(source.utf8.count) bytes ("), "the file's size\n\(line)")
        #expect(line.hasSuffix(" as sent to the sandbox), more than the 16777216 that limits.max_frame_bytes allows; raise max_frame_bytes under [limits] in a policy file (at most 1073741824)"),
                "the limit and the key that raises it\n\(line)")
        #expect(!line.contains("protocol error"), "\(line)")
    }

    @Test func aScriptOverTheReadLimitSaysSoInOneSentence() throws {
        let scratch = try CLITests.Scratch()
        let script = try scratch.file("huge.py", "")
        #expect(truncate(script, (64 << 20) + 1) == 0) // sparse: no 64 MiB written
        let run = try CLI.run(["run", script])
        #expect(run.status == ExitStatus.capsuleError, "\(run)")
        #expect(run.stderrLines == ["capsule: \(script) is more than 64 MiB, the largest script capsule runs"], "\(run)")
    }

    @Test func runsOnceThePolicyRaisesTheLimit() throws {
        var limits = Limits()
        limits.maxFrameBytes = 32 << 20
        let code = "data = '" + String(repeating: "a", count: 17 << 20) + "'\nprint('LENGTH', len(data))\n"
        let t = try Sandboxed.runFresh(code, policy: Policy(level: .sandbox, limits: limits))
        t.expectLine("LENGTH \(17 << 20)")
        t.expectFinishedCleanly()
    }
}

@Suite("Newcomer failures: never silent") struct NeverSilentTests {
    static func earlyExit(_ status: Int) -> String {
        "the code's process exited with status \(status) before the run finished: it called os._exit or closed its channel, or capsule's worker failed (its message, if any, is above)"
    }

    @Test func anExceptionWhoseTracebackCannotBeFormattedStillSaysWhatItWas() throws {
        // As under memory pressure: with the address space used up, the worker cannot import
        // `traceback`; stderr still names the exception (CPython's last line), never nothing.
        let run = try CLI.run(["exec", "-c", #"""
            import resource
            size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (size + (16 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
            hog = []
            try:
                while True:
                    hog.append(bytearray(1 << 16))
            except MemoryError:
                pass
            raise RuntimeError("can't start new thread")
            """#])
        #expect(run.status == 1, "\(run)")
        #expect(run.stderrLines.last == "RuntimeError: can't start new thread", "\(run)")
    }

    @Test func aProcessThatEndsBeforeTheRunFinishesIsExplained() throws {
        let scratch = try CLITests.Scratch()
        let report = "\(scratch.path)/report.json"
        let run = try CLI.run(["exec", "--report", report, "-c", "import os\nprint('BYE', flush=True)\nos._exit(3)"])
        #expect(run.status == 3, "os._exit's status, as in CPython\n\(run)")
        let reason = Self.earlyExit(3)
        #expect(run.stderrLines.last == "capsule: \(reason)", "\(run)")
        #expect(try Host.reportOutcome(report) == "{\"exit_code\":3,\"kind\":\"early-exit\",\"reason\":\"\(reason)\"}\n")
    }

    @Test func aFailureOfTheWorkerItselfIsNamed() throws {
        // The worker's own code fails after the user's has finished (here the code broke it on
        // purpose): the worker says what failed, and capsule says the run did not finish.
        let scratch = try CLITests.Scratch()
        let report = "\(scratch.path)/report.json"
        let run = try CLI.run(["exec", "--report", report, "-c",
                               "import capsule_worker.execute as e\ne._send_or = None\nprint('SABOTAGED')"])
        #expect(run.status == 1, "\(run)")
        #expect(run.stdout == "SABOTAGED\n", "\(run)")
        let reason = Self.earlyExit(1)
        #expect(run.stderrLines.suffix(2) == ["capsule_worker: the worker failed: TypeError: 'NoneType' object is not callable",
                                              "capsule: \(reason)"], "\(run)")
        #expect(try Host.reportOutcome(report) == "{\"exit_code\":1,\"kind\":\"early-exit\",\"reason\":\"\(reason)\"}\n")
    }
}

@Suite("Newcomer failures: memory_mb is memory in use") struct MemoryInUseTests {
    static func policy(memoryMB: Int) -> Policy { Sandboxed.policy { $0.memoryMB = memoryMB } }

    /// Runs `code` after checking that the session has its memory cgroup and pid namespace;
    /// cancels loudly where it does not (the code is destructive only where isolation holds).
    static func runIsolated(_ code: String, memoryMB: Int) throws -> Transcript {
        try Sandboxed.withSession(policy(memoryMB: memoryMB)) { session in
            let probe = Sandboxed.run(Python.memoryCgroupProbe + "import os\nprint('PID', os.getpid())\n", in: session)
            guard probe.line("MEMORY-CGROUP") == "MEMORY-CGROUP True", probe.line("PID") == "PID 2" else {
                try Test.cancel("SKIPPED: no memory cgroup or pid namespace for the session here: \(session.notes) \(probe)")
            }
            return Sandboxed.run(code, in: session)
        }
    }

    @Test func threadsStartUpToMaxProcessesUnderASmallMemoryLimit() throws {
        // Thread stacks are reserved address space, not memory in use: under 128 MiB as under
        // 512, threads stop at the process limit (pid 1 and the main thread take two of its
        // max_processes + 1 slots), not after 5.
        let t = try Self.runIsolated(#"""
            import threading
            threading.stack_size(0)  # the default: 8 MiB each
            release, threads = threading.Event(), []
            try:
                while len(threads) < 1000:
                    thread = threading.Thread(target=release.wait)
                    thread.start()
                    threads.append(thread)
            except RuntimeError as e:
                print("THREADS-STOPPED", len(threads), e)
            release.set()
            for thread in threads:
                thread.join()
            print("JOINED")
            """#, memoryMB: 128)
        t.expectLine("THREADS-STOPPED \(Limits().maxProcesses - 1) can't start new thread")
        t.expectLine("JOINED")
        t.expectFinishedCleanly()
    }

    @Test func reservedAddressSpaceIsNotMemoryButTouchedMemoryIs() throws {
        let t = try Self.runIsolated(#"""
            import mmap, resource
            print("RLIMIT_AS_MB", resource.getrlimit(resource.RLIMIT_AS)[1] >> 20)
            reserved = mmap.mmap(-1, 600 << 20)  # far more than memory_mb, never touched
            print("RESERVED 600")
            hog = []
            while True:
                hog.append(b"x" * (10 << 20))   # every page written: memory in use
                print("HELD", 10 * len(hog), flush=True)
            """#, memoryMB: 128)
        t.expectLine("RLIMIT_AS_MB \(4 * 128 + 8 * Limits().maxProcesses)")
        t.expectLine("RESERVED 600")
        let held = t.lines.compactMap { $0.hasPrefix("HELD ") ? Int($0.dropFirst(5)) : nil }.max() ?? 0
        #expect(held >= 60 && held <= 128, "stopped near memory_mb, not before\n\(t)")
        #expect(t.outcome == .limitExceeded(.memory(megabytes: 128)), "the memory cgroup killed it\n\(t)")
        #expect(ExitStatus(t.outcome, policy: Self.policy(memoryMB: 128)).kind == "memory-limit")
    }

    @Test func withoutAMemoryCgroupMemoryMBLimitsTheAddressSpaceAndSaysSo() throws {
        // An ordinary user cannot create cgroups here: RLIMIT_AS is then memory_mb itself.
        let setpriv = "/usr/bin/setpriv"
        guard getuid() == 0, access(setpriv, X_OK) == 0 else {
            try Test.cancel("SKIPPED: needs root and \(setpriv) to become an unprivileged user")
        }
        let run = try CLI.run(["exec", "-c", "import resource\nprint('AS', resource.getrlimit(resource.RLIMIT_AS)[1] >> 20)"],
                              via: [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"])
        if run.status != 0 && run.stderr.contains("Permission denied") && !run.stderr.contains("cgroup") {
            try Test.cancel("SKIPPED: the checkout is not readable by nobody here\n\(run)")
        }
        #expect(run.stdout == "AS \(Limits().memoryMB)\n", "\(run)")
        let note = try #require(run.stderrLines.first, "\(run)")
        #expect(note.hasPrefix("capsule: note: no cgroup for this session:") && note.hasSuffix(
            "; memory_mb then limits each process's address space (RLIMIT_AS: thread stacks and mappings count, not only memory in use), and max_processes holds through RLIMIT_NPROC only"),
                "\(note)")
    }
}

@Suite("Newcomer failures: piped input the policy does not grant") struct RefusedInputTests {
    static let note = "capsule: note: the code read standard input, which has data, but saw end of input: this policy does not grant the `input` capability (`[capabilities.input]`, from level restricted, as in --policy restricted)"
    static let readsTwice = "import sys\nprint(repr(sys.stdin.read()))\nprint(repr(sys.stdin.readline()))\n"

    /// A pipe holding `text`, its write end closed, as `printf text | capsule …` gives.
    static func pipe(holding text: String) throws -> (read: Int32, close: () -> Void) {
        var fds: [Int32] = [-1, -1]
        guard Glibc.pipe(&fds) == 0 else { throw SystemError("pipe", errno: errno) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) } // no other test's child may hold it
        try OS.writeAll(fds[1], text)
        OS.close(fds[1])
        return (fds[0], { OS.close(fds[0]) })
    }

    /// What is still in the pipe: capsule must not have read it.
    static func remaining(_ fd: Int32) -> String {
        try? OS.setNonBlocking(fd)
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { (try? OS.read(fd, into: $0)) ?? 0 }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    @Test func isNamedOnceAndLeftUnread() throws {
        let input = try Self.pipe(holding: "x\n")
        defer { input.close() }
        let run = try CLI.run(["exec", "--policy", "sandbox", "-c", Self.readsTwice], stdin: input.read)
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "''\n''\n", "the code still sees end of input\n\(run)")
        #expect(run.stderrLines == [Self.note], "said once, naming the capability\n\(run)")
        #expect(Self.remaining(input.read) == "x\n", "capsule did not consume standard input")
    }

    @Test func codeThatDoesNotReadLeavesInputAloneAndQuiet() throws {
        let input = try Self.pipe(holding: "x\n")
        defer { input.close() }
        let run = try CLI.run(["exec", "-c", "print('NO READ')"], stdin: input.read)
        #expect(run.status == 0 && run.stdout == "NO READ\n" && run.stderr.isEmpty, "\(run)")
        #expect(Self.remaining(input.read) == "x\n")
    }

    @Test func emptyInputNeedsNoNote() throws {
        let run = try CLI.run(["exec", "-c", Self.readsTwice]) // stdin is /dev/null
        #expect(run.status == 0 && run.stdout == "''\n''\n", "\(run)")
        #expect(run.stderr.isEmpty, "\(run)")
    }

    @Test func aTerminalIsNeitherWaitedForNorNamed() throws {
        // A pseudo-terminal by hand (the C library's posix_openpt is not visible to Swift here).
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        var unlock: Int32 = 0, number: UInt32 = 0
        guard master >= 0, ioctl(master, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0, ioctl(master, 0x8004_5430 /* TIOCGPTN */, &number) == 0 else {
            try Test.cancel("SKIPPED: no pseudo-terminal here")
        }
        defer { OS.close(master) }
        let terminal = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY | O_CLOEXEC)
        #expect(terminal >= 0 && isatty(terminal) == 1)
        defer { OS.close(terminal) }
        let run = try CLI.run(["exec", "-c", "input('? ')"], timeout: 20, stdin: terminal)
        #expect(run.status == 1, "EOFError at once, no wait for the person at the terminal\n\(run)")
        #expect(run.stderrLines.last == "EOFError: EOF when reading a line", "\(run)")
        #expect(!run.stderr.contains("capsule: note"), "\(run)")
    }
}
