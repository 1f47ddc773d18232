import CapsuleOS
import CapsulePolicy
import CapsuleRuntime
import Testing

/// `[sandbox] python_subprocess = true`: sys.executable starts Python again, under the same
/// sandbox, and nothing else can be executed (docs/policy.md, SECURITY.md).
enum PythonSubprocess {
    static func policy(_ configure: (inout Limits) -> Void = { _ in }) -> Policy {
        var policy = Sandboxed.policy(configure)
        policy.pythonSubprocess = true
        return policy
    }

    /// `raw_exec(path, *args, fd=None)`: forks, and the child calls execve (or execveat on `fd`)
    /// through libc, past every Python-level explanation. Returns ("refused", errno) when the
    /// kernel refused, or ("ran", exit status, first output bytes).
    static let rawExecPrelude = #"""
        import ctypes, os, shutil, sys
        _libc = ctypes.CDLL(None, use_errno=True)
        def raw_exec(path, *args, fd=None):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r); os.dup2(w, 1); os.dup2(w, 2)
                argv = (ctypes.c_char_p * (len(args) + 2))(path.encode(), *[a.encode() for a in args], None)
                envp = (ctypes.c_char_p * 1)(None)
                if fd is None:
                    _libc.execve(path.encode(), argv, envp)
                else:
                    _libc.syscall(322, fd, b"", argv, envp, 0x1000)  # execveat(fd, "", ..., AT_EMPTY_PATH)
                os._exit(200 + ctypes.get_errno() % 50)
            os.close(w)
            out = b""
            while chunk := os.read(r, 65536):
                out += chunk
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            return ("refused", code - 200) if code >= 200 else ("ran", code, out[:120])
        def executable_copy(path):
            # Python itself where it is there (python_subprocess), else an ELF that runs as a program too
            source = "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else "/usr/lib/x86_64-linux-gnu/libc.so.6"
            shutil.copy(source, path)
            os.chmod(path, 0o755)
            return path

        """#
}

@Suite("Python subprocesses: sys.executable starts Python again") struct PythonSubprocessTests {
    @Test func subprocessRunsTheInterpreterAndCapturesItsOutput() throws {
        let t = try Sandboxed.runFresh(#"""
            import subprocess, sys
            print("EXECUTABLE", sys.executable)
            done = subprocess.run([sys.executable, "-c", "import sys; print('CHILD', sys.executable, sum(range(10))); sys.exit(3)"],
                                  capture_output=True, text=True)
            print("STATUS", done.returncode, done.stdout.strip(), repr(done.stderr))
            print("BY-NAME", subprocess.run(["python3", "-c", "print(6 * 7)"], capture_output=True, text=True).stdout.strip())
            failed = subprocess.run([sys.executable, "-c", "1/0"], capture_output=True, text=True)
            print("TRACEBACK", failed.returncode, failed.stderr.strip().splitlines()[-1])
            """#, policy: PythonSubprocess.policy())
        t.expectFinishedCleanly()
        t.expectLine("EXECUTABLE /usr/bin/python3")
        t.expectLine("STATUS 3 CHILD /usr/bin/python3 45 ''")
        t.expectLine("BY-NAME 42")
        t.expectLine("TRACEBACK 1 ZeroDivisionError: division by zero")
    }

    @Test func multiprocessingSpawnAndForkserverWork() throws {
        let t = try Sandboxed.runFresh(#"""
            import multiprocessing
            for method in ("spawn", "forkserver"):
                with multiprocessing.get_context(method).Pool(2) as pool:
                    print(method.upper(), pool.map(abs, [-1, -2, -3]))
            """#, policy: PythonSubprocess.policy())
        t.expectFinishedCleanly()
        t.expectLine("SPAWN [1, 2, 3]")
        t.expectLine("FORKSERVER [1, 2, 3]")
    }

    @Test func otherProgramsAreRefusedWithASentenceNamingWhatMayRun() throws {
        let t = try Sandboxed.runFresh(#"""
            import os, subprocess
            try:
                subprocess.run(["ls", "/"])
            except PermissionError as e:
                print("REFUSED", e.errno, e.strerror)
            print("SYSTEM", os.system("echo hi"))
            """#, policy: PythonSubprocess.policy())
        t.expectFinishedCleanly()
        t.expectLine("REFUSED 1 capsule: only Python itself (sys.executable, /usr/bin/python3) can be started inside the sandbox ([sandbox] python_subprocess = true); other programs are not there to run")
        t.expectLine("SYSTEM 32512")
    }

    @Test func withoutTheOptionTheRefusalNamesIt() throws {
        let t = try SharedSession.misc.run(#"""
            import subprocess, sys
            print("EXECUTABLE", repr(sys.executable))
            try:
                subprocess.run([sys.executable or "python3", "-c", "pass"])
            except PermissionError as e:
                print("REFUSED", e.strerror.endswith("[sandbox] python_subprocess = true"))
            """#)
        t.expectFinishedCleanly()
        t.expectLine("EXECUTABLE ''")
        t.expectLine("REFUSED True")
    }

    @Test func theChildIsConfinedAsItsParentIs() throws {
        let t = try Sandboxed.runFresh(#"""
            import subprocess, sys
            child = r'''
            import ctypes, os, socket
            libc = ctypes.CDLL(None, use_errno=True)
            status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
            print("PID", os.getpid() < 100, "SECCOMP", status["Seccomp"].strip(), "NNP", status["NoNewPrivs"].strip(), "CAPS", status["CapEff"].strip())
            print("UNSHARE", libc.syscall(272, 0x10000000), ctypes.get_errno())
            for path in ("/usr/lib/evil", "/etc/evil"):
                try:
                    open(path, "w")
                except OSError as e:
                    print("WRITE", path, e.errno)
            try:
                socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                print("INET", e.errno)
            mounts = {line.split()[4]: line.split()[5] for line in open("/proc/self/mountinfo")}
            print("NOEXEC", all("noexec" in mounts[p] for p in ("/workspace", "/tmp", "/dev/shm")))
            '''
            done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
            print(done.stdout, done.stderr, sep="")
            """#, policy: PythonSubprocess.policy())
        t.expectFinishedCleanly()
        t.expectLine("PID True SECCOMP 2 NNP 1 CAPS 0000000000000000")
        t.expectLine("UNSHARE -1 1")
        t.expectLine("WRITE /usr/lib/evil 30")
        t.expectLine("WRITE /etc/evil 30")
        t.expectLine("INET 1")
        t.expectLine("NOEXEC True")
    }

    @Test func theChildSharesTheProcessLimit() throws {
        // A fork bomb of interpreters stops at max_processes; the session and the supervisor go on.
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            import subprocess, sys
            assert os.getpid() < 100, "not in a pid namespace of its own"
            children, failure = [], None
            for _ in range(40):
                try:
                    children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
                except OSError as e:
                    failure = e.errno
                    break
            for child in children:
                child.kill()
                child.wait()
            print("STARTED", len(children) < 16, "STOPPED", failure)
            """#, policy: PythonSubprocess.policy { $0.maxProcesses = 16 })
        t.expectFinishedCleanly()
        t.expectLine("STARTED True STOPPED 11")
        Sandboxed.expectNewSessionWorks()
    }
}

/// Python started again keeps the session's capabilities, over a channel its parent relays
/// (worker/channel.py): as the session's own code, and no more.
@Suite struct PythonSubprocessCapabilityTests {
    static func policy(_ tree: HostTree) throws -> Policy {
        var policy = try tree.policy()
        policy.pythonSubprocess = true
        return policy
    }

    @Test func aPythonStartedAgainCallsTheSessionsCapabilities() throws {
        let tree = try HostTree()
        let session = try Sandboxed.start(try Self.policy(tree))
        defer { session.shutdown(grace: 1) }
        let t = Sandboxed.run(#"""
            import os, subprocess, sys
            HELLO = "\#(tree.path)/in/hello.txt"
            def child(code, **options):
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **options)
                return done.returncode, done.stdout.strip(), done.stderr.strip().splitlines()[-1:]
            READ = f"from capsule import file; print(file.read_text({HELLO!r}).strip())"
            print("READ", child(READ))
            print("ENVIRON", child("import os, sys; print(os.environ.get('CAPSULE_CHANNEL'), os.environ.get('MINE'), '/usr/lib/capsule' in sys.path)", env={"MINE": "kept"}))
            print("DENIED", child("from capsule import file; file.read_text('\#(tree.path)/secret.txt')"))
            print("WRITE", child("from capsule import file; print(file.write_text('\#(tree.path)/out/child.txt', 'from the child'))"))
            print("NESTED", child(f"import subprocess, sys; print(subprocess.run([sys.executable, '-c', {READ!r}], capture_output=True, text=True).stdout.strip())"))
            print("SPAWN", child(READ, close_fds=False))  # subprocess then uses os.posix_spawn
            print("FORKED", child(f"import os, sys\nif os.fork() == 0:\n    {READ}\n    sys.stdout.flush()\n    os._exit(0)\nos.wait()"))
            print("FORGED", child(READ, env={"CAPSULE_CHANNEL": "1"}))
            # Its relay thread ends before it finalizes: woken there, it aborted the process (pthread_exit needs
            # libgcc_s, not in the root). The race showed under CI load; this runs the path a dozen times.
            WAIT = "import os\nif os.fork() == 0:\n    os._exit(0)\nos.wait()"
            print("FINALIZED", [subprocess.run([sys.executable, "-c", WAIT]).returncode for _ in range(12)])
            with open("/workspace/helper.py", "w") as f:
                f.write(f"from capsule import file\ndef first(i):\n    return i, file.read_text({HELLO!r}).split()[0]\n")
            sys.path.insert(0, "/workspace")
            import helper, multiprocessing
            for method in ("spawn", "forkserver"):
                with multiprocessing.get_context(method).Pool(2) as pool:
                    print(method.upper(), sorted(pool.map(helper.first, range(6)))[:2])
            """#, in: session)
        t.expectFinishedCleanly()
        t.expectLine("READ (0, 'hello from the host', [])")
        t.expectLine("ENVIRON (0, 'None kept False', [])")
        #expect(t.stdout.contains("DENIED (1, '', [\"capsule.CapabilityDenied: '\(tree.path)/secret.txt' is outside the roots"), "\(t)")
        t.expectLine("WRITE (0, '14', [])")
        #expect(try Host.readFile("\(tree.path)/out/child.txt") == "from the child")
        t.expectLine("NESTED (0, 'hello from the host', [])")
        t.expectLine("SPAWN (0, 'hello from the host', [])")
        t.expectLine("FORKED (0, 'hello from the host', [])")
        t.expectLine("FORGED (0, 'hello from the host', [])")
        t.expectLine("FINALIZED [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]")
        t.expectLine("SPAWN [(0, 'hello'), (1, 'hello')]")
        t.expectLine("FORKSERVER [(0, 'hello'), (1, 'hello')]")
        tree.expectStillRead(in: session)
    }

    @Test func aDescriptionLargerThanTheSocketsBufferArrivesWhole() throws {
        // The relay writes what does not fit at once from a thread of its own, while the child starts.
        let tree = try HostTree()
        let t = try Sandboxed.runFresh(#"""
            import subprocess, sys
            from capsule_worker import children
            children.described = [*children.described, {"name": "custom.big", "doc": "x" * 3_000_000, "methods": []}]
            done = subprocess.run([sys.executable, "-c", "import capsule; print(len(capsule.big.__doc__), capsule.file.read_text('\#(tree.path)/in/hello.txt').strip())"],
                                  capture_output=True, text=True)
            print("CHILD", done.returncode, done.stdout.strip(), done.stderr[-300:])
            """#, policy: try Self.policy(tree))
        t.expectFinishedCleanly()
        t.expectLine("CHILD 0 3000000 hello from the host ")
    }
}

@Suite("Escapes: with python_subprocess nothing but Python can be executed") struct PythonSubprocessEscapeTests {
    /// Every case runs past the worker's explanations (raw execve through libc); the kernel must refuse.
    @Test func writtenBinariesScriptsAndLoadersDoNotRun() throws {
        let t = try Sandboxed.runFresh(PythonSubprocess.rawExecPrelude + #"""
            print("PYTHON", raw_exec("/usr/bin/python3", "-c", "print('python ok')"))
            print("WORKSPACE", raw_exec(executable_copy("/workspace/x"), "-c", "print('ESCAPED')"))
            print("TMP", raw_exec(executable_copy("/tmp/x"), "-c", "print('ESCAPED')"))
            print("SHM", raw_exec(executable_copy("/dev/shm/x"), "-c", "print('ESCAPED')"))
            with open("/workspace/job.sh", "w") as f:
                f.write("#!/usr/bin/python3\nprint('ESCAPED')\n")
            os.chmod("/workspace/job.sh", 0o755)
            print("SHEBANG", raw_exec("/workspace/job.sh"))
            print("LIBRARY", raw_exec("/usr/lib/x86_64-linux-gnu/libc.so.6"))
            loader = raw_exec("/lib64/ld-linux-x86-64.so.2", "/workspace/x", "-c", "print('ESCAPED')")
            print("LOADER", loader[0], b"failed to map" in loader[2])
            fd = os.open("/usr/bin/python3.11", os.O_RDONLY)
            print("EXECVEAT", raw_exec("", fd=fd))
            print("MEMFD", _libc.syscall(319, b"x", 0), ctypes.get_errno())
            # /proc/self/exe is this same binary: started by that name it is the launcher, which
            # needs namespaces the filter refuses, and it ends at once.
            print("SELF", raw_exec("/proc/self/exe", "--worker-path", "/usr/lib/capsule")[:2])
            """#, policy: PythonSubprocess.policy())
        t.expectFinishedCleanly()
        t.expectLine("PYTHON ('ran', 0, b'python ok\\n')")
        for label in ["WORKSPACE", "TMP", "SHM", "SHEBANG", "LIBRARY"] { t.expectLine("\(label) ('refused', 13)") }
        t.expectLine("LOADER ran True")
        t.expectLine("EXECVEAT ('refused', 1)")
        t.expectLine("MEMFD -1 1")
        t.expectLine("SELF ('ran', 125)")
        #expect(!t.stdout.contains("ESCAPED"), "\(t)")
    }

    @Test func theHostsProgramsInAReadOnlyBinDoNotRunEither() throws {
        // readonly_paths may show the host's /usr/bin: its python3.11 is then this sandbox's, and
        // the rest are files to read, not to run.
        var policy = PythonSubprocess.policy()
        policy.level = .restricted
        policy.readonlyPaths = ["/usr/bin"]
        let t = try Sandboxed.runFresh(PythonSubprocess.rawExecPrelude + #"""
            import subprocess
            print("PYTHON", subprocess.run([sys.executable, "-c", "print('python ok')"], capture_output=True, text=True).stdout.strip())
            print("LS-READABLE", os.access("/usr/bin/ls", os.R_OK))
            print("LS", raw_exec("/usr/bin/ls", "/"))
            print("SH", raw_exec("/bin/sh", "-c", "echo ESCAPED"))
            """#, policy: policy)
        t.expectFinishedCleanly()
        t.expectLine("PYTHON python ok")
        t.expectLine("LS-READABLE True")
        t.expectLine("LS ('refused', 13)")
        t.expectLine("SH ('refused', 13)")
        #expect(!t.stdout.contains("ESCAPED"), "\(t)")
    }

    @Test func aPythonStartedAgainSpeaksOnlyThroughItsRelay() throws {
        // Its channel reaches its parent's relay, which passes on calls and output and nothing
        // else: forged frames there speak for nobody, and the session goes on.
        let tree = try HostTree()
        let session = try Sandboxed.start(try PythonSubprocessCapabilityTests.policy(tree))
        defer { session.shutdown(grace: 1) }
        let t = Sandboxed.run(#"""
            import subprocess, sys
            child = r"""
            import json, os
            def frame(message):
                body = json.dumps(message).encode()
                return len(body).to_bytes(4, "big") + body
            sockets = [fd for fd in range(64) if os.path.exists(f"/proc/self/fd/{fd}") and os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")]
            print("SOCKETS", len(sockets), flush=True)
            channel = sockets[0]
            for forged in [{"type": "done", "id": "1", "status": "ok", "duration": 0},
                           {"type": "result", "id": "1", "data": {"text/plain": "FORGED"}},
                           {"type": "configure", "capabilities": []},
                           {"type": "cap_call", "id": "x", "capability": "file", "method": "read_bytes", "args": {"path": "%s/secret.txt"}}]:
                os.write(channel, frame(forged))
            replies = b""
            while b'"x"' not in replies:
                replies += os.read(channel, 1 << 16)
            print("REPLY-DENIED", b"CapabilityDenied" in replies and b"TOP SECRET" not in replies, flush=True)
            os.write(channel, b"\xff\xff\xff\xff garbage")
            """ % "\#(tree.path)"
            done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
            print(done.stdout, done.stderr, sep="")
            from capsule import file
            print("PARENT", file.read_text("\#(tree.path)/in/hello.txt").strip())
            """#, in: session)
        t.expectFinishedCleanly()
        t.expectLine("SOCKETS 1")
        t.expectLine("REPLY-DENIED True")
        t.expectLine("PARENT hello from the host")
        #expect(!t.stdout.contains("FORGED") && !t.stdout.contains("TOP SECRET"), "\(t)")
        let next = Sandboxed.run("print('NEXT', 6 * 7)", in: session)
        next.expectFinishedCleanly()
        next.expectLine("NEXT 42")
    }

    @Test func withoutTheOptionEvenPythonDoesNotRun() throws {
        let t = try Sandboxed.runFresh(PythonSubprocess.rawExecPrelude + #"""
            print("PYTHON-PRESENT", os.path.exists("/usr/bin/python3.11"))
            print("WORKSPACE", raw_exec(executable_copy("/workspace/x"), "-c", "print('ESCAPED')"))
            print("SELF", raw_exec("/proc/self/exe", "-c", "print('ESCAPED')"))
            """#)
        t.expectFinishedCleanly()
        t.expectLine("PYTHON-PRESENT False")
        t.expectLine("WORKSPACE ('refused', 1)")
        t.expectLine("SELF ('refused', 1)")
        #expect(!t.stdout.contains("ESCAPED"), "\(t)")
    }
}
