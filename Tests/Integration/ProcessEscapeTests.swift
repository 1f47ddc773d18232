// Running other programs, and signalling processes outside the sandbox.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

@Suite("Running programs") struct ExecEscapeTests {
    let shared = SharedSession.misc

    func attempt(_ body: String) throws -> Transcript {
        let transcript = try shared.run(Python.prelude + body)
        transcript.expectFinishedCleanly()
        return transcript
    }

    @Test func subprocessRun() throws {
        let t = try attempt(#"""
            import subprocess
            attempt("subprocess", lambda: subprocess.run(["/bin/sh", "-c", "echo ESCAPED"], capture_output=True))
            attempt("check_output", lambda: subprocess.check_output(["id"]))
            """#)
        t.expectBlocked("subprocess", EPERM)
        t.expectBlocked("check_output", EPERM)
    }

    @Test func osSystem() throws {
        let t = try attempt(#"""
            status = os.system("echo ESCAPED")
            print("SYSTEM-EXIT", os.waitstatus_to_exitcode(status))
            """#)
        // The forked child cannot execve the shell: it exits 127, and no "ESCAPED" is printed.
        t.expectLine("SYSTEM-EXIT 127")
        #expect(!t.stdout.contains("ESCAPED\n"), "\(t)")
    }

    @Test func execFamily() throws {
        let t = try attempt(#"""
            attempt("execv", lambda: os.execv("/bin/sh", ["sh", "-c", "echo ESCAPED"]))
            attempt("execve-python", lambda: os.execve("/proc/self/exe", ["capsule-worker", "--probe"], {}))
            attempt("posix_spawn", lambda: os.posix_spawn("/bin/sh", ["sh"], {}))
            attempt("posix_spawnp", lambda: os.posix_spawnp("sh", ["sh"], {}))
            print("SPAWNV-EXIT", os.spawnv(os.P_WAIT, "/bin/sh", ["sh"]))
            """#)
        t.expectBlocked("execv", EPERM)
        t.expectBlocked("execve-python", EPERM, EACCES)
        t.expectBlocked("posix_spawn", EPERM)
        t.expectBlocked("posix_spawnp", EPERM, ENOENT)
        // os.spawnv forks; the child's failed exec exits 127.
        t.expectLine("SPAWNV-EXIT 127")
    }

    @Test func execFromWorkspaceAndMemfd() throws {
        let t = try attempt(#"""
            import shutil
            open("/workspace/run.sh", "w").write("#!/bin/sh\necho ESCAPED\n")
            os.chmod("/workspace/run.sh", 0o755)
            attempt("workspace-script", lambda: os.execv("/workspace/run.sh", ["run.sh"]))
            # A copy of a real ELF binary from the interpreter's own libraries (the dynamic loader).
            loader = "/lib64/ld-linux-x86-64.so.2"
            fd = os.memfd_create("payload")
            with open(loader, "rb") as f:
                os.write(fd, f.read())
            attempt("memfd-exec", lambda: os.execv("/proc/self/fd/%d" % fd, ["x", "--version"]))
            attempt("memfd-fexecve", lambda: os.execve(fd, ["x", "--version"], {}))
            os.close(fd)
            attempt("loader-direct", lambda: os.execv(loader, [loader, "--version"]))
            """#)
        t.expectBlocked("workspace-script", EPERM)
        t.expectBlocked("memfd-exec", EPERM)
        t.expectBlocked("memfd-fexecve", EPERM)
        t.expectBlocked("loader-direct", EPERM)
    }

    @Test func ctypesDlopenOfWrittenLibraryCannotExec() throws {
        // Native code is available (ctypes), but it runs under the same filter: spawning fails.
        let t = try attempt(#"""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            rc = libc.system(b"echo ESCAPED")
            print("LIBC-SYSTEM", os.waitstatus_to_exitcode(rc) if rc != -1 else -1)
            """#)
        t.expectLine("LIBC-SYSTEM 127")
        #expect(!t.stdout.contains("ESCAPED\n"))
    }
}

@Suite("Signals") struct SignalEscapeTests {
    /// Confirms the pid namespace first, so a failed isolation never signals the host.
    static let isolationCheck = #"""
        import os, signal, time
        if os.getpid() > 3 or os.getppid() != 1:
            print("SKIP not in an own pid namespace", os.getpid(), os.getppid())
            raise SystemExit(0)
        print("ISOLATED", os.getpid(), os.getppid())

        """#

    func skipUnlessIsolated(_ t: Transcript) throws {
        if t.line("SKIP") != nil { try Test.cancel("the sandbox is not in its own pid namespace: \(t.stdout)") }
        t.expectLine("ISOLATED 2 1")
    }

    @Test func killMinusOneSIGKILL() throws {
        try Sandboxed.withSession { session in
            let t = Sandboxed.run(Self.isolationCheck + Python.prelude + #"""
                attempt("kill-all", lambda: os.kill(-1, signal.SIGKILL))
                print("SURVIVED")
                """#, in: session)
            try skipUnlessIsolated(t)
            // Everything but init and the caller: in the sandbox that is nobody.
            t.expectBlocked("kill-all", ESRCH)
            t.expectLine("SURVIVED")
            t.expectFinishedCleanly()
            let after = Sandboxed.run("print('still', 'here')", in: session)
            after.expectLine("still here")
        }
        #expect(Host.spawnAndWait("/bin/true") == 0, "the host can still start processes")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func killMinusOneFromAChild() throws {
        // A forked child kills every process it can see: Python goes, the host does not.
        let t = try Sandboxed.runFresh(Self.isolationCheck + #"""
            child = os.fork()
            if child == 0:
                os.kill(-1, signal.SIGKILL)
                os._exit(0)
            time.sleep(5)
            print("PARENT-SURVIVED")
            """#)
        try skipUnlessIsolated(t)
        #expect(t.line("PARENT-SURVIVED") == nil, "\(t)")
        #expect(t.outcome == .workerEnded(exitCode: nil, signal: SIGKILL), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func killParentWithSIGKILL() throws {
        try Sandboxed.withSession { session in
            let t = Sandboxed.run(Self.isolationCheck + #"""
                os.kill(os.getppid(), signal.SIGKILL)   # pid 1 of the namespace: the kernel ignores it
                time.sleep(0.2)
                print("STILL-RUNNING", os.getppid())
                """#, in: session)
            try skipUnlessIsolated(t)
            t.expectLine("STILL-RUNNING 1")
            t.expectFinishedCleanly()
            #expect(session.isAlive)
            Sandboxed.run("print('next', 'cell')", in: session).expectLine("next cell")
        }
    }

    @Test func stopInit() throws {
        try Sandboxed.withSession { session in
            let t = Sandboxed.run(Self.isolationCheck + #"""
                os.kill(1, signal.SIGSTOP)
                time.sleep(0.1)
                state = [l for l in open("/proc/1/status") if l.startswith("State:")][0].split()[1]
                print("INIT-STATE", state)
                """#, in: session)
            try skipUnlessIsolated(t)
            t.expectLine("INIT-STATE S")
            t.expectFinishedCleanly()
            Sandboxed.run("print('next', 'cell')", in: session).expectLine("next cell")
        }
    }

    @Test func killInitThroughPidfd() throws {
        try Sandboxed.withSession { session in
            let t = Sandboxed.run(Self.isolationCheck + #"""
                import signal
                fd = os.pidfd_open(1)
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                os.close(fd)
                time.sleep(0.2)
                print("INIT-ALIVE", os.getppid(), open("/proc/1/status").read().split("State:")[1].split()[0])
                """#, in: session)
            try skipUnlessIsolated(t)
            t.expectLine("INIT-ALIVE 1 S")
            t.expectFinishedCleanly()
        }
    }

    @Test func terminateInit() throws {
        // SIGTERM to pid 1 is how the launcher, outside the namespace, ends a sandbox. From inside
        // it is ignored, so the code cannot make pid 1 report a kill that never happened.
        let t = try Sandboxed.runFresh(Self.isolationCheck + #"""
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                os.kill(1, sig)
            time.sleep(0.3)
            print("SURVIVED")
            """#)
        try skipUnlessIsolated(t)
        t.expectLine("SURVIVED")
        t.expectFinishedCleanly()
        #expect(Host.spawnAndWait("/bin/true") == 0)
        Sandboxed.expectNewSessionWorks()
    }

    @Test func selfSentSIGXCPUIsNotTheCPULimit() throws {
        // pid 1 reports the CPU limit only when the CPU time says so.
        let t = try Sandboxed.runFresh("import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)")
        #expect(t.outcome == .workerEnded(exitCode: nil, signal: SIGXCPU), "\(t)")
    }

    @Test func killOwnProcessGroup() throws {
        let t = try Sandboxed.runFresh(Self.isolationCheck + #"""
            print("PGRP", os.getpgrp(), os.getsid(0))
            os.killpg(0, signal.SIGKILL)
            print("SURVIVED")
            """#)
        try skipUnlessIsolated(t)
        // The session and process group are the sandbox's own (pid 1 called setsid).
        t.expectLine("PGRP 1 1")
        #expect(t.line("SURVIVED") == nil)
        #expect(t.outcome == .workerEnded(exitCode: nil, signal: SIGKILL), "\(t)")
        #expect(Host.spawnAndWait("/bin/true") == 0)
        Sandboxed.expectNewSessionWorks()
    }

    @Test func signalHostProcessesByPid() throws {
        try Sandboxed.withSession { session in
            let launcher = session.pid
            let t = Sandboxed.run(Self.isolationCheck + Python.prelude + #"""
                for name, pid in [("test-process", \#(getpid())), ("launcher", \#(launcher))]:
                    attempt("kill:" + name, lambda: os.kill(pid, signal.SIGKILL))
                    attempt("pidfd:" + name, lambda: os.pidfd_open(pid))
                    attempt("pgrp:" + name, lambda: os.killpg(pid, signal.SIGKILL))
                """#, in: session)
            try skipUnlessIsolated(t)
            for name in ["test-process", "launcher"] {
                t.expectBlocked("kill:" + name, ESRCH)
                t.expectBlocked("pidfd:" + name, ESRCH)
                t.expectBlocked("pgrp:" + name, ESRCH)
            }
            #expect(kill(launcher, 0) == 0, "the launcher is alive")
            #expect(session.isAlive)
        }
    }

    @Test func processesDoNotOutliveTheSession() throws {
        let session = try Sandboxed.start()
        let t = Sandboxed.run(Self.isolationCheck + #"""
            hostuid = int(open("/proc/self/uid_map").read().split()[1])
            child = os.fork()
            if child == 0:
                os.setsid()
                if os.fork() == 0:     # a daemon: double fork, own session, parent gone
                    time.sleep(600)
                os._exit(0)
            os.waitpid(child, 0)
            print("HOSTUID", hostuid)
            """#, in: session)
        try skipUnlessIsolated(t)
        let hostUID = try #require(t.words("HOSTUID")?.first.flatMap { UInt32($0) }, "\(t)")
        if hostUID == getuid() {
            try Test.cancel("the supervisor is not root, so the sandbox shares the caller's uid: cannot tell its processes apart")
        }
        let before = Host.processes(ofUID: hostUID)
        #expect(before.count >= 3, "positive control: init, Python and the daemon run as uid \(hostUID)")
        session.shutdown(grace: 1)
        var after = Host.processes(ofUID: hostUID)
        for _ in 0..<40 where !after.isEmpty {
            Host.sleep(seconds: 0.05)
            after = Host.processes(ofUID: hostUID)
        }
        #expect(after.isEmpty, "processes of the sandbox outlived it: \(after)")
    }

    @Test func processesDoNotOutliveALauncherKilledOutright() throws {
        // SIGKILL leaves the launcher no time to kill the sandbox: the sandbox's pid 1 must die of
        // the parent-death signal, which the kernel clears when the credentials change, so pid 1
        // sets it again once they are final (sandbox.c). Without that, the code ran on with no
        // timeout and nobody reading it.
        let session = try Sandboxed.start()
        defer { session.kill() }
        let t = Sandboxed.run(Self.isolationCheck + #"""
            if os.fork() == 0:
                time.sleep(600)
            print("HOSTUID", int(open("/proc/self/uid_map").read().split()[1]))
            """#, in: session)
        try skipUnlessIsolated(t)
        let hostUID = try #require(t.words("HOSTUID")?.first.flatMap { UInt32($0) }, "\(t)")
        if hostUID == getuid() {
            try Test.cancel("the supervisor is not root, so the sandbox shares the caller's uid: cannot tell its processes apart")
        }
        #expect(Host.processes(ofUID: hostUID).count >= 3, "positive control: init, Python and the child run as uid \(hostUID)")
        kill(session.pid, SIGKILL)
        var after = Host.processes(ofUID: hostUID)
        for _ in 0..<100 where !after.isEmpty {
            Host.sleep(seconds: 0.05)
            after = Host.processes(ofUID: hostUID)
        }
        #expect(after.isEmpty, "the sandbox outlived its launcher: \(after)")
    }
}
