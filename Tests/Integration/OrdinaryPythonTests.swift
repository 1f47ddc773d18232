// What a new user hits first: ordinary Python that expects what CPython on a normal machine
// offers — a writable /tmp, time zones, name resolution and CA certificates where the network is
// granted — keeps working in the sandbox, without opening anything the escape suite closes.
#if canImport(Glibc)
import Glibc
#endif
import Testing
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
            def write_mb(path, mb):
                with open(path, "wb") as f:
                    for _ in range(mb):
                        f.write(b"x" * (1 << 20))
                        f.flush()
            write_mb("/tmp/first", 3)
            attempt("second", lambda: write_mb("/workspace/second", 3))
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
            """#, policy: Policy(level: .unrestricted))
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
        t.expectLine("MESSAGE \(Self.why); do the work in Python (os.fork() and multiprocessing's 'fork' start method work)")
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
