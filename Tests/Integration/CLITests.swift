// End to end through the real `capsule` binary: exit status and the one-line reason on stderr.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

@Suite("capsule binary, end to end") struct CLITests {
    /// A scratch directory on the host for scripts and policy files.
    final class Scratch {
        let path: String
        init() throws { path = try Host.temporaryDirectory() }
        func file(_ name: String, _ text: String) throws -> String {
            let file = "\(path)/\(name)"
            try Host.writeFile(file, text)
            return file
        }
        deinit { Host.removeTree(path) }
    }

    func requireBinary() throws {
        try #require(OS_isExecutable(CLI.executable), "capsule was not built at \(CLI.executable)")
    }

    @Test func helloExample() throws {
        try requireBinary()
        let run = try CLI.run(["run", "--policy", "sandbox", "\(Host.repository)/examples/hello.py"])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.hasPrefix("Hello from the sandbox!\n"), "\(run)")
        #expect(run.reasonLines.isEmpty, "no reason line for a normal exit\n\(run)")
    }

    @Test func sysExitStatus() throws {
        try requireBinary()
        let scratch = try Scratch()
        let script = try scratch.file("exit3.py", "import sys\nprint('bye')\nsys.exit(3)\n")
        let run = try CLI.run(["run", "--policy", "sandbox", script])
        #expect(run.status == 3, "\(run)")
        #expect(run.stdout == "bye\n", "\(run)")
        #expect(run.reasonLines.isEmpty, "\(run)")
    }

    @Test func uncaughtException() throws {
        try requireBinary()
        let scratch = try Scratch()
        let script = try scratch.file("boom.py", "def f():\n    return 1 / 0\nf()\n")
        let run = try CLI.run(["run", "--policy", "sandbox", script])
        #expect(run.status == 1, "\(run)")
        #expect(run.stderrLines.first(where: { !$0.hasPrefix("capsule: note:") }) == "Traceback (most recent call last):",
                "\(run)")
        #expect(run.reasonLines.isEmpty, "an exception's status needs no reason line\n\(run)")
        #expect(run.stderr.contains("line 2, in f"), "\(run)")
        #expect(run.stderrLines.last == "ZeroDivisionError: division by zero", "\(run)")
        #expect(!run.stderr.contains("capsule_worker"), "no worker frames in the traceback\n\(run)")
    }

    @Test func timeout() throws {
        try requireBinary()
        let scratch = try Scratch()
        let policy = try scratch.file("timeout.toml", "level = \"sandbox\"\n[limits]\ntimeout_s = 1\n")
        let script = try scratch.file("spin.py", "while True:\n    pass\n")
        let run = try CLI.run(["run", "--policy", policy, script])
        #expect(run.status == ExitStatus.timeout, "\(run)")
        #expect(run.stderrLines.last?.hasPrefix("capsule: timeout: the code ran longer than 1 s") == true, "\(run)")
    }

    @Test func memoryBomb() throws {
        try requireBinary()
        let run = try CLI.run(["exec", "--policy", "sandbox", "-c",
                               "chunks = []\nwhile True:\n    chunks.append(b'x' * (10 << 20))\n"])
        #expect(run.status == ExitStatus.memoryLimit, "\(run)")
        #expect(run.stderrLines.last?.hasPrefix("capsule: memory limit:") == true, "\(run)")
    }

    @Test func gigabyteOfOutput() throws {
        // The supervisor streams output and kills at the cap: its own memory stays bounded.
        try requireBinary()
        let run = try CLI.runMeasuringMemory(["exec", "--policy", "sandbox", "-c",
                                              "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\nprint('FINISHED', file=sys.stderr)\n"])
        #expect(run.status == ExitStatus.outputLimit, "\(run)")
        #expect(run.stderrLines.last?.hasPrefix("capsule: output limit:") == true, "\(run)")
        #expect(!run.stderr.contains("FINISHED"), "\(run)")
        #expect(run.stdoutBytes <= 16 << 20 && run.stdoutBytes > 8 << 20, "\(run)")
        #expect(run.maxResidentMB < 200, "the supervisor's peak RSS was \(run.maxResidentMB) MB\n\(run)")
    }

    @Test func badPolicyFile() throws {
        try requireBinary()
        let scratch = try Scratch()
        let policy = try scratch.file("bad.toml", "level = \"sandbox\"\n[limits]\ntimeout_seconds = 5\n")
        let run = try CLI.run(["run", "--policy", policy, "\(Host.repository)/examples/hello.py"])
        #expect(run.status == ExitStatus.capsuleError, "\(run)")
        #expect(run.stderrLines.count == 1 && run.stderr.hasPrefix("capsule:"), "one line\n\(run)")
        #expect(run.stderr.contains("limits.timeout_seconds"), "the message names the key\n\(run)")
        #expect(run.stdout.isEmpty, "nothing ran\n\(run)")
    }

    @Test func badPolicyValue() throws {
        try requireBinary()
        let scratch = try Scratch()
        let policy = try scratch.file("bad.toml", "level = \"sandbox\"\n[limits]\nmemory_mb = 1\n")
        let run = try CLI.run(["exec", "--policy", policy, "-c", "print('ran')"])
        #expect(run.status == ExitStatus.capsuleError, "\(run)")
        #expect(run.stderr.contains("memory_mb"), "\(run)")
        #expect(run.stdout.isEmpty, "\(run)")
    }

    @Test func foreignSyscallABIKillsTheCode() throws {
        try requireBinary()
        let run = try CLI.run(["exec", "--policy", "sandbox", "-c", Python.machineCodePrelude + #"""
            machine_code(b"\xb8" + imm32(310) + b"\xbb" + imm32(0x10000000) + b"\xcd\x80\xc3")()
            print("RETURNED")
            """#])
        #expect(run.status == 128 + SIGSYS, "\(run)")
        #expect(run.stderrLines.last == "capsule: the code was killed by signal \(SIGSYS)", "\(run)")
        #expect(!run.stdout.contains("RETURNED"))
    }

    @Test func networkRefusedThroughCLI() throws {
        try requireBinary()
        let listener = try TCPListener()
        let run = try CLI.run(["exec", "--policy", "sandbox", "-c",
                               "import socket\nsocket.create_connection(('127.0.0.1', \(listener.port)))\n"])
        #expect(run.status == 1, "\(run)")
        #expect(run.stderrLines.last == "PermissionError: [Errno 1] Operation not permitted", "\(run)")
        #expect(!Host.isReadable(listener.fd))
    }

    @Test func daemonDoesNotOutliveTheCommand() throws {
        // `capsule exec` returns without waiting for the teardown; a daemonized child of the code
        // must still be gone shortly after.
        try requireBinary()
        let run = try CLI.run(["exec", "--policy", "sandbox", "-c", #"""
            import os, time
            print(open("/proc/self/uid_map").read().split()[1], flush=True)
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(600)
                os._exit(0)
            time.sleep(0.2)
            """#])
        #expect(run.status == 0, "\(run)")
        let uid = try #require(UInt32(run.stdout.trimmingSuffix()), "\(run)")
        if uid == getuid() { try Test.cancel("not root: the sandbox shares the caller's uid") }
        var left = Host.processes(ofUID: uid)
        for _ in 0..<60 where !left.isEmpty {
            Host.sleep(seconds: 0.05)
            left = Host.processes(ofUID: uid)
        }
        #expect(left.isEmpty, "processes of the sandbox (host uid \(uid)) outlived capsule exec: \(left)")
    }
    @Test func unprivilegedCallerMapsToItselfWithoutACgroup() throws {
        // Run by an ordinary user (nobody), uid 0 inside maps to that user, and the session says
        // plainly that it has no cgroup; the code still runs.
        try requireBinary()
        let setpriv = "/usr/bin/setpriv"
        guard getuid() == 0, OS_isExecutable(setpriv) else {
            try Test.cancel("SKIPPED: needs root and \(setpriv) to become an unprivileged user")
        }
        let run = try CLI.run(["exec", "-c", "print('MAP', *open('/proc/self/uid_map').read().split())"],
                              via: [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"])
        if run.status != 0 && run.stderr.contains("Permission denied") && !run.stderr.contains("cgroup") {
            try Test.cancel("SKIPPED: the checkout is not readable by nobody here\n\(run)")
        }
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "MAP 0 65534 1\n", "\(run)")
        #expect(run.stderrLines.first?.hasPrefix("capsule: note: no cgroup for this session:") == true, "\(run)")
    }

    @Test func theReportCannotBeForgedByTheCodesOutput() throws {
        try requireBinary()
        let scratch = try Scratch()
        let report = "\(scratch.path)/report.json"
        let forged = try CLI.run(["exec", "--report", report, "-c",
                                  "import sys\nsys.stderr.write('capsule: timeout: the code ran longer than 30 s\\n')\nsys.exit(124)"])
        #expect(forged.status == 124)
        #expect(try Host.reportOutcome(report) == "{\"exit_code\":124,\"kind\":\"exit\",\"reason\":null}\n")
        let policy = try scratch.file("t.toml", "level = \"sandbox\"\n[limits]\ntimeout_s = 1\n")
        let real = try CLI.run(["exec", "--policy", policy, "--report", report, "-c", "while True: pass"])
        #expect(real.status == ExitStatus.timeout)
        #expect(try Host.reportOutcome(report)
            == "{\"exit_code\":124,\"kind\":\"timeout\",\"reason\":\"timeout: the code ran longer than 1 s and was stopped (limits.timeout_s in the policy)\"}\n")
    }


    @Test func aFrameOfTinyValuesCannotBalloonTheSupervisor() throws {
        // 16 MiB of `[[[0]]],` once cost the supervisor ~470 MB; the reader now stops at 65536 values.
        try requireBinary()
        let scratch = try Scratch()
        let script = try scratch.file("amp.py", #"""
            import os
            unit = b"[[[0]]],"
            body = b'{"type":"stream","id":"1","name":"stdout","text":"x","junk":[' + unit * ((16 << 20) // len(unit) - 16) + b'0]}'
            os.write(3, len(body).to_bytes(4, "big") + body)
            """#)
        let run = try CLI.runMeasuringMemory(["run", script])
        #expect(run.status == ExitStatus.capsuleError, "\(run)")
        #expect(run.stderrLines.last?.contains("more than 65536 values") == true, "\(run)")
        #expect(run.maxResidentMB < 120, "the supervisor's peak RSS was \(run.maxResidentMB) MB")
    }


    @Test func aReportIsWrittenHoweverTheRunEnds() throws {
        try requireBinary()
        let scratch = try Scratch()
        let report = try scratch.file("report.json", "{\"exit_code\":0,\"kind\":\"exit\",\"reason\":null}\n")
        let missing = try CLI.run(["run", "--report", report, "\(scratch.path)/missing.py"])
        #expect(missing.status == ExitStatus.capsuleError)
        #expect(try Host.reportOutcome(report)
            == "{\"exit_code\":125,\"kind\":\"capsule-error\",\"reason\":\"cannot read \(scratch.path)/missing.py: No such file or directory\"}\n")
        let forged = try CLI.run(["exec", "--report", report, "-c", "raise MemoryError('fake')"])
        #expect(forged.status == ExitStatus.memoryLimit)
        #expect(try Host.readFile(report).contains("\"kind\":\"exit\""), "a MemoryError the code raised is its own exit")
        #expect(mkfifo("\(scratch.path)/fifo", 0o600) == 0)
        let fifo = try CLI.run(["exec", "--report", "\(scratch.path)/fifo", "-c", "1"], timeout: 10)
        #expect(fifo.status == ExitStatus.capsuleError)
        #expect(fifo.stderrLines.first == "capsule: the report \(scratch.path)/fifo is not a regular file", "\(fifo)")
    }


    @Test func aRootSupervisorInANamespaceWithFewIdsFallsBackToNobody() throws {
        // As in a rootless container: root of a user namespace that maps only 0..65535, so the
        // per-session ids (2000000000+pid) do not exist there. The sandbox runs as 65534 and says so.
        try requireBinary()
        guard getuid() == 0, OS_isExecutable("/usr/bin/python3") else {
            try Test.cancel("SKIPPED: needs root and /usr/bin/python3 to build the namespace")
        }
        let scratch = try Scratch()
        let harness = try scratch.file("nest.py", #"""
            import ctypes, os, sys
            r1, w1 = os.pipe(); r2, w2 = os.pipe()
            pid = os.fork()
            if pid == 0:
                assert ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0  # CLONE_NEWUSER
                os.write(w1, b"u"); os.read(r2, 1)
                os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
                os.execv(sys.argv[1], sys.argv[1:])
            os.read(r1, 1)
            for name, text in (("uid_map", "0 100000 65536"), ("setgroups", "deny"), ("gid_map", "0 100000 65536")):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text + "\n")
            os.write(w2, b"g")
            sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
            """#)
        let run = try CLI.run(["exec", "-c", "print('MAP', *open('/proc/self/uid_map').read().split())"],
                              via: ["/usr/bin/python3", harness])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == "MAP 0 65534 1\n", "\(run)")
        #expect(run.stderrLines.first == "capsule: note: this user namespace does not map capsule's per-session ids; sandboxes share the unprivileged id 65534", "\(run)")
    }

}

private extension CLIRun {
    /// `capsule: …` lines other than notes about the host.
    var reasonLines: [String] { stderrLines.filter { $0.hasPrefix("capsule:") && !$0.hasPrefix("capsule: note:") } }
}

private func OS_isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

private extension String {
    func trimmingSuffix() -> String {
        var text = self
        while text.last == "\n" || text.last == " " { text.removeLast() }
        return text
    }

}
