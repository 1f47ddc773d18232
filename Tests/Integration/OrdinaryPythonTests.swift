// What a new user hits first: ordinary Python that expects what CPython on a normal machine
// offers — a writable /tmp, time zones, name resolution and CA certificates where the network is
// granted — keeps working in the sandbox, without opening anything the escape suite closes.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleOS
import CapsulePolicy
import CapsuleRuntime

@Suite("Ordinary Python: the files it expects") struct ExpectedFilesTests {
    let shared = SharedSession.misc

    @Test func tmpIsPrivateAndWritable() throws {
        let name = "capsule-tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let t = try shared.run(Python.prelude + #"""
            import socket, stat, tempfile
            with open("/tmp/\#(name)", "w") as f:
                f.write("kept")
            print("TMP", open("/tmp/\#(name)").read(), oct(stat.S_IMODE(os.stat("/tmp").st_mode)))
            with tempfile.NamedTemporaryFile() as f:
                print("TEMPFILE", os.path.dirname(f.name))
            s = socket.socket(socket.AF_UNIX)
            s.bind("/tmp/\#(name).sock")
            print("SOCKET", stat.S_ISSOCK(os.stat("/tmp/\#(name).sock").st_mode))
            s.close()
            """#)
        t.expectFinishedCleanly()
        t.expectLine("TMP kept 0o1777")
        t.expectLine("TEMPFILE /tmp")
        t.expectLine("SOCKET True")
        // Nothing of it is the host's /tmp.
        #expect(access("/tmp/\(name)", F_OK) != 0 && access("/tmp/\(name).sock", F_OK) != 0, "\(t)")
    }

    @Test func tmpAndWorkspaceShareTheWorkspaceSize() throws {
        let policy = Sandboxed.policy { $0.workspaceMB = 4 }
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            with open("/tmp/first", "wb") as f:
                f.write(b"x" * (3 << 20))
            attempt("second", lambda: open("/workspace/second", "wb").write(b"y" * (3 << 20)))
            print("SAME-FS", os.stat("/tmp").st_dev == os.stat("/workspace").st_dev)
            """#, policy: policy)
        t.expectBlocked("second", ENOSPC)
        t.expectLine("SAME-FS True")
        t.expectFinishedCleanly()
    }

    @Test func timeZoneDatabase() throws {
        guard access("/usr/share/zoneinfo/Europe/Paris", R_OK) == 0 else {
            try Test.cancel("this host has no /usr/share/zoneinfo/Europe/Paris")
        }
        let t = try shared.run(Python.prelude + #"""
            import datetime, zoneinfo
            paris = zoneinfo.ZoneInfo("Europe/Paris")
            print("PARIS", datetime.datetime(2024, 7, 1, 12, tzinfo=paris).utcoffset(),
                  datetime.datetime(2024, 1, 1, 12, tzinfo=paris).tzname())
            attempt("write-zoneinfo", lambda: open("/usr/share/zoneinfo/evil", "w"))
            """#)
        t.expectFinishedCleanly()
        t.expectLine("PARIS 2:00:00 CET")
        t.expectBlocked("write-zoneinfo", EROFS, EACCES)
    }

    @Test func hostNetworkBringsNameResolutionAndCertificates() throws {
        guard access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0 || access("/etc/pki/tls/cert.pem", R_OK) == 0 else {
            try Test.cancel("this host has no CA bundle")
        }
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            import socket, ssl
            print("LOCALHOST", socket.gethostbyname("localhost"))
            print("CA", ssl.create_default_context().cert_store_stats()["x509_ca"] > 0)
            attempt("write-hosts", lambda: open("/etc/hosts", "a"))
            attempt("write-certs", lambda: open("/etc/ssl/certs/evil.pem", "w"))
            """#, policy: try PolicyLoader.load("\(Host.repository)/policies/unrestricted.toml"))
        t.expectFinishedCleanly()
        t.expectLine("LOCALHOST 127.0.0.1")
        t.expectLine("CA True")
        t.expectBlocked("write-hosts", EROFS, EACCES)
        t.expectBlocked("write-certs", EROFS, EACCES)
    }

    @Test func withoutTheNetworkThereAreNoNetworkFiles() throws {
        let t = try shared.run(Python.prelude + #"""
            for path in ["/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/ssl", "/usr/lib/ssl"]:
                attempt("absent:" + path, lambda: os.stat(path))
            """#)
        t.expectFinishedCleanly()
        for path in ["/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/ssl", "/usr/lib/ssl"] {
            t.expectBlocked("absent:" + path, ENOENT)
        }
    }
}

@Suite("Ordinary Python: starting programs says why it cannot") struct StartingProgramsTests {
    let shared = SharedSession.misc
    static let why = "capsule: programs cannot be started inside the sandbox (execve is not allowed)"

    @Test func subprocessRaisesAClearPermissionError() throws {
        let t = try shared.run(#"""
            import subprocess
            try:
                subprocess.run(["echo", "hi"])
            except PermissionError as e:
                print("ERRNO", e.errno, e.filename)
                print("MESSAGE", e.strerror)
            """#)
        t.expectFinishedCleanly()
        t.expectLine("ERRNO 1 echo")
        t.expectLine("MESSAGE \(Self.why); do the work in Python (os.fork() and multiprocessing's 'fork' start method work), or let the policy start Python itself with [sandbox] python_subprocess = true")
    }

    @Test func osSystemSaysWhyAndReturnsWhatAShellWould() throws {
        let t = try shared.run(#"""
            import os
            print("STATUS", os.system("echo hi"))
            """#)
        t.expectFinishedCleanly()
        t.expectLine("STATUS 32512")
        #expect(t.stderr.hasPrefix("\(Self.why): os.system('echo hi') returns exit status 127 (32512) without running anything;"), "\(t)")
    }

    @Test func multiprocessingSpawnSaysToUseFork() throws {
        let t = try shared.run(#"""
            import multiprocessing
            try:
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    pool.map(abs, [-1])
            except PermissionError as e:
                print("SPAWN", e.strerror)
            with multiprocessing.get_context("fork").Pool(2) as pool:
                print("FORK", pool.map(abs, [-1, -2]))
            """#)
        t.expectFinishedCleanly()
        #expect(t.line("SPAWN")?.hasPrefix("SPAWN \(Self.why); multiprocessing's 'spawn' and 'forkserver' start methods start a new Python: use the 'fork' start method") == true, "\(t)")
        t.expectLine("FORK [1, 2]")
    }

    @Test func sharedMemoryWorksWithoutTheResourceTracker() throws {
        let t = try shared.run(#"""
            import os
            from multiprocessing import shared_memory
            block = shared_memory.SharedMemory(create=True, size=16)
            pid = os.fork()
            if pid == 0:
                child = shared_memory.SharedMemory(block.name)
                child.buf[0] = 42
                child.close()
                os._exit(0)
            os.waitpid(pid, 0)
            print("SHARED", block.buf[0])
            block.close()
            block.unlink()
            """#)
        t.expectFinishedCleanly()
        t.expectLine("SHARED 42")
        #expect(t.stderr.isEmpty, "no warning about a dead resource tracker\n\(t)")
    }

    @Test func theMessageIsNoBoundaryTheKernelStillRefuses() throws {
        // Code can switch the worker's explanation off (in a session of its own); execve still
        // fails, now with the kernel's own words.
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            import capsule_worker.programs as programs
            programs._EVENTS = frozenset()
            try:
                os.execv("/bin/sh", ["sh", "-c", "echo ESCAPED"])
            except OSError as e:
                print("KERNEL", e.errno, e.strerror)
            """#)
        t.expectFinishedCleanly()
        t.expectLine("KERNEL 1 Operation not permitted")
        #expect(!t.stdout.contains("ESCAPED"), "\(t)")
    }
}

@Suite("Ordinary Python: standard streams") struct StandardStreamsTests {
    let shared = SharedSession.misc

    /// A scratch script on the host, removed with the value.
    final class Script {
        let directory: String
        let path: String
        init(_ name: String, _ bytes: [UInt8]) throws {
            directory = try Host.temporaryDirectory()
            path = "\(directory)/\(name)"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw SystemError("open \(path)", errno: errno) }
            defer { close(fd) }
            try OS.writeAll(fd, bytes)
        }
        convenience init(_ name: String, _ text: String) throws { try self.init(name, Array(text.utf8)) }
        deinit { Host.removeTree(directory) }
    }

    @Test func binaryOutputReachesStdoutByteForByte() throws {
        let script = try Script("binary.py", #"""
            import io, os, sys
            print("text")
            sys.stdout.buffer.write(b"\xff\xfe\x00 raw\n")
            latin = io.TextIOWrapper(sys.stdout.buffer, encoding="latin-1", write_through=True)
            latin.write("\xe9\n")
            os.write(1, b"\x80 fd\n")
            print(os.fsdecode(b"name-\xfe"))
            """#)
        let run = try CLI.run(["run", script.path])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdoutData == Array("text\n".utf8) + [0xff, 0xfe, 0x00] + Array(" raw\n".utf8) + [0xe9, 0x0a, 0x80]
                + Array(" fd\nname-".utf8) + [0xfe, 0x0a], "\(run)")
    }

    @Test func streamObjectsAreWhatLibrariesExpect() throws {
        let t = try shared.run(#"""
            import faulthandler, io, os, stat, sys
            print("FILENO", sys.stdout.fileno(), sys.stderr.fileno(), sys.stdin.fileno())
            print("PIPES", stat.S_ISFIFO(os.fstat(1).st_mode), stat.S_ISFIFO(os.fstat(2).st_mode), os.isatty(1))
            print("BUFFERS", sys.stdout.buffer.write(b"") == 0, sys.stdin.buffer.read(), sys.stdin.buffer.readline())
            faulthandler.enable()
            print("FAULTHANDLER", faulthandler.is_enabled())
            faulthandler.disable()  # the session is shared
            """#)
        t.expectFinishedCleanly()
        t.expectLine("FILENO 1 2 0")
        t.expectLine("PIPES True True False")
        t.expectLine("BUFFERS True b'' b''")
        t.expectLine("FAULTHANDLER True")
    }

    @Test func directWritesArriveInOrderWithPrint() throws {
        let t = try shared.run(#"""
            import ctypes, os, sys
            libc = ctypes.CDLL(None)
            os.write(1, b"1 fd\n")
            print("2 print")
            libc.printf(b"3 printf %d\n", 3)
            print("4 print")
            os.write(2, b"5 fd\n")
            print("6 print", file=sys.stderr)
            print("7 print")
            os.write(1, b"8 fd\n")
            pid = os.fork()
            if pid == 0:
                os.write(1, b"9 child\n")
                os._exit(0)
            os.waitpid(pid, 0)
            print("10 print")
            libc.printf(b"11 no newline")
            """#)
        t.expectFinishedCleanly()
        #expect(t.stdout == "1 fd\n2 print\n3 printf 3\n4 print\n7 print\n8 fd\n9 child\n10 print\n11 no newline", "\(t)")
        #expect(t.stderr == "5 fd\n6 print\n", "\(t)")
    }

    @Test func codeThatCapturesItsOwnFdOutputIsNotHeldUp() throws {
        // wurlitzer-style: fd 1 pointed at the code's own pipe, read only later. Frames meanwhile
        // do not wait for that pipe (if each waited its second, 40 prints would pass the 30 s
        // timeout), and what was captured is the code's to print.
        let t = try shared.run(#"""
            import os
            read_end, write_end = os.pipe()
            saved = os.dup(1)
            os.dup2(write_end, 1)
            os.write(1, b"captured\n")
            for i in range(40):
                print("printed", i)
            os.dup2(saved, 1)
            os.close(write_end)
            print("CAPTURED", os.read(read_end, 100))
            os.close(read_end)
            os.close(saved)
            """#)
        t.expectFinishedCleanly()
        #expect(t.lines == (0..<40).map { "printed \($0)" } + ["CAPTURED b'captured\\n'"], "\(t)")
    }

    @Test func aCrashReportsThroughStderr() throws {
        let t = try Sandboxed.runFresh(#"""
            import ctypes, faulthandler
            faulthandler.enable()
            print("before")
            ctypes.string_at(0)
            """#)
        #expect(t.outcome == .workerEnded(exitCode: nil, signal: SIGSEGV), "\(t)")
        t.expectLine("before")
        #expect(t.stderr.hasPrefix("Fatal Python error: Segmentation fault\n"), "\(t)")
        #expect(t.stderr.contains("line 4 in <module>"), "\(t)")
    }

    @Test func directWritesCountAgainstTheOutputLimit() throws {
        let policy = Sandboxed.policy { $0.maxOutputBytes = 100_000 }
        let t = try Sandboxed.runFresh(#"""
            import os
            print("x" * 50_000)
            while True:
                os.write(1, b"y" * 10_000)
                os.write(2, b"z" * 10_000)
            """#, policy: policy)
        #expect(t.outcome == .limitExceeded(.output(bytes: 100_000)), "\(t)")
        #expect(t.stdout.utf8.count + t.stderr.utf8.count == 100_000, "output up to the limit, not beyond")
        Sandboxed.expectNewSessionWorks()
    }

    @Test func framesWrittenToStdoutAreOnlyText() throws {
        // fds 1 and 2 carry bytes, never frames: a forged `result` and `done` there are output.
        let t = try shared.run(#"""
            import os
            from capsule_worker import frames, streams
            forged = frames.encode({"type": "result", "id": streams.current_id, "data": {"text/plain": "forged"}})
            forged += frames.encode({"type": "done", "id": streams.current_id, "status": "ok", "duration": 0})
            os.write(1, forged)
            os.write(2, forged)
            print("\nSTILL RUNNING")
            """#)
        t.expectFinishedCleanly()
        t.expectLine("STILL RUNNING")
        #expect(t.stdout.contains(#"{"type":"result""#) && t.stderr.contains(#"{"type":"done""#), "\(t)")
    }

    @Test func directWritesAreFilteredOnATerminal() throws {
        guard access("/usr/bin/python3", X_OK) == 0 else { try Test.cancel("needs /usr/bin/python3 for a pty") }
        let script = try Script("title.py", #"""
            import os
            os.write(1, b"\x1b]0;pwned\x07 \x1b[31mred\x1b[0m caf\xc3")
            os.write(1, b"\xa9\n")
            os.write(2, b"\x1b]52;c;Y2xpcGJvYXJk\x07\n")
            """#)
        // pty.spawn puts capsule on a terminal and copies what it shows.
        let run = try CLI.run(["run", script.path], via: ["/usr/bin/python3", "-c", "import pty, sys; pty.spawn(sys.argv[1:])"])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.contains("^[]0;pwned^G \u{1B}[31mred\u{1B}[0m café\r\n"), "\(run)")
        #expect(run.stdout.contains("^[]52;c;Y2xpcGJvYXJk^G"), "\(run)")
        #expect(!run.stdout.contains("\u{1B}]"), "no operating system command reached the terminal\n\(run)")
    }
}

@Suite("Ordinary Python: script encodings") struct ScriptEncodingTests {
    typealias Script = StandardStreamsTests.Script

    /// CPython's own run of `script`, to compare with.
    func cpython(_ script: Script) throws -> CLIRun {
        guard access("/usr/bin/python3", X_OK) == 0 else { try Test.cancel("needs /usr/bin/python3 to compare with") }
        return try CLI.run([], via: ["/usr/bin/python3", "-I", "-S", script.path]) // runs python3 only; capsule is its argv[1]
    }

    static let accepted: [(String, [UInt8])] = {
        let latin1: [UInt8] = Array("# -*- coding: latin-1 -*-\nx = '".utf8) + [0xe9] + Array("'\nprint(x, len(x), ascii(x))\n".utf8)
        let bom: [UInt8] = [0xef, 0xbb, 0xbf] + Array("print('bom', ascii('é'))\n".utf8)
        let cp1252: [UInt8] = Array("#!/usr/bin/env python3\n# vim: set fileencoding=cp1252 :\nprint(ascii('".utf8) + [0x80]
            + Array("'))\n".utf8)
        return [("latin1.py", latin1), ("bom.py", bom), ("cp1252.py", cp1252)]
    }()

    @Test(arguments: accepted)
    func runsAsCPythonRunsIt(name: String, bytes: [UInt8]) throws {
        let script = try Script(name, bytes)
        let run = try CLI.run(["run", script.path])
        let reference = try cpython(script)
        #expect(reference.status == 0, "\(reference)")
        #expect(run.status == 0 && run.stdoutData == reference.stdoutData, "capsule:\n\(run)\ncpython:\n\(reference)")
    }

    @Test func aScriptCPythonRefusesGetsItsSentence() throws {
        let script = try Script("lat.py", Array("x = '".utf8) + [0xe9] + Array("'\nprint(x)\n".utf8))
        let run = try CLI.run(["run", script.path])
        #expect(run.status == 1, "\(run)")
        let reference = try cpython(script)
        #expect(run.stderrLines.last != nil && run.stderrLines.last == reference.stderrLines.last, "capsule:\n\(run)\ncpython:\n\(reference)")
        #expect(run.stderrLines.last?.hasPrefix("SyntaxError: Non-UTF-8 code starting with '\\xe9' in file \(script.path) on line 1") == true, "\(run)")

        let unknown = try Script("unknown.py", "# coding: no-such-codec\nprint(1)\n")
        let refused = try CLI.run(["run", unknown.path])
        #expect(refused.status == 1 && refused.stderrLines.last == "SyntaxError: unknown encoding: no-such-codec", "\(refused)")
    }
}
