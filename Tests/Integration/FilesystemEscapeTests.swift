// Reaching the host's files: reading secrets, writing outside /workspace, and link tricks.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

@Suite("Filesystem escapes") struct FilesystemEscapeTests {
    let shared = SharedSession.filesystem

    func attempt(_ body: String) throws -> Transcript {
        let transcript = try shared.run(Python.prelude + body)
        transcript.expectFinishedCleanly()
        return transcript
    }

    // MARK: Reading the host

    @Test func readEtcShadow() throws {
        let t = try attempt(#"attempt("shadow", lambda: open("/etc/shadow").read())"#)
        t.expectBlocked("shadow", ENOENT)
    }

    @Test func listRootHome() throws {
        let t = try attempt(#"attempt("root", lambda: os.listdir("/root"))"#)
        t.expectBlocked("root", ENOENT)
    }

    @Test func hostPasswdIsNotVisible() throws {
        let host = try #require(Host.readText("/etc/passwd"), "the host has no /etc/passwd to compare with")
        #expect(host.contains("root:x:0:0"), "positive control: the host's passwd has a root line")
        let t = try attempt(#"""
            text = open("/etc/passwd").read()
            print("HAS-HOST-ROOT", "root:x:0:0" in text)
            print("PASSWD", text.strip())
            """#)
        t.expectLine("HAS-HOST-ROOT False")
        t.expectLine("PASSWD sandbox:x:0:0:capsule sandbox:/workspace:/nonexistent")
    }

    @Test func readInitEnvironment() throws {
        let hostInit = Host.readText("/proc/1/cmdline") ?? ""
        let t = try attempt(#"""
            attempt("environ", lambda: open("/proc/1/environ", "rb").read())
            cmdline = open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode()
            print("INIT", cmdline)
            """#)
        t.expectBlocked("environ", EACCES)
        let sandboxInit = t.words("INIT")?.first ?? ""
        #expect(sandboxInit.hasSuffix("/capsule-worker"), "pid 1 inside is capsule's init\n\(t)")
        #expect(!hostInit.hasPrefix(sandboxInit + "\0"), "pid 1 inside must not be the host's init")
    }

    @Test func listHostProcesses() throws {
        let t = try attempt(#"""
            pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
            print("PIDS", *pids)
            """#)
        let pids = (t.words("PIDS") ?? []).compactMap { Int32($0) }
        #expect(pids.starts(with: [1, 2]), "pid 1 (init) and 2 (Python) are there\n\(t)")
        #expect(pids.count < 10 && pids.allSatisfy { $0 < 100 }, "only the sandbox's own processes\n\(t)")
        #expect(!pids.contains(getpid()), "the test process is not visible")
    }

    @Test func procRootOfInitIsClosed() throws {
        let t = try attempt(#"""
            attempt("root1", lambda: os.listdir("/proc/1/root"))
            attempt("cwd1", lambda: os.readlink("/proc/1/cwd"))
            attempt("mem1", lambda: open("/proc/1/mem", "rb").read(1))
            attempt("statuspipe", lambda: open("/proc/1/fd/4", "w"))
            print("SELF-ROOT-SAME", sorted(os.listdir("/proc/self/root")) == sorted(os.listdir("/")))
            """#)
        t.expectBlocked("root1", EACCES)
        t.expectBlocked("cwd1", EACCES)
        t.expectBlocked("mem1", EACCES)
        t.expectBlocked("statuspipe", EACCES)
        t.expectLine("SELF-ROOT-SAME True")
    }

    @Test func kernelSecretsInProc() throws {
        let t = try attempt(#"""
            attempt("kmsg", lambda: open("/proc/kmsg", "rb").read(1))
            attempt("kcore", lambda: open("/proc/kcore", "rb").read(1))
            attempt("sysrq", lambda: open("/proc/sysrq-trigger", "w").write("h"))
            try:
                addresses = {line.split()[0] for line in open("/proc/kallsyms")}
            except OSError:
                addresses = {"0000000000000000"}  # no kallsyms at all leaks nothing either
            print("KALLSYMS-ADDRESSES", *sorted(addresses)[:3])
            """#)
        t.expectBlocked("kmsg", EACCES)
        t.expectBlocked("kcore", ENOENT, EACCES)
        t.expectBlocked("sysrq", ENOENT, EACCES, EROFS)
        t.expectLine("KALLSYMS-ADDRESSES 0000000000000000") // no kernel address leaks (KASLR)
    }

    @Test func hostDirectoriesAreAbsent() throws {
        let t = try attempt(#"""
            for path in ["/sys", "/var", "/home", "/run", "/boot", "/usr/bin", "/bin/sh"]:
                attempt("absent:" + path, lambda: os.stat(path))
            print("ROOT", *sorted(os.listdir("/")))
            """#)
        for path in ["/sys", "/var", "/home", "/run", "/boot", "/usr/bin", "/bin/sh"] {
            t.expectBlocked("absent:" + path, ENOENT)
        }
        let root = Set(t.words("ROOT") ?? [])
        // /tmp is the sandbox's own (OrdinaryPythonTests), never the host's.
        #expect(root.isSubset(of: ["bin", "dev", "etc", "lib", "lib64", "opt", "proc", "sbin", "tmp", "usr", "workspace"]),
                "only what the interpreter needs is in the root\n\(t)")
        #expect(root.isSuperset(of: ["dev", "etc", "proc", "usr", "workspace"]))
    }

    @Test func deviceNodes() throws {
        let t = try attempt(#"""
            print("DEV", *sorted(os.listdir("/dev")))
            for node in ["/dev/tty", "/dev/mem", "/dev/kmsg", "/dev/console", "/dev/sda", "/dev/vda", "/dev/fuse", "/dev/net/tun"]:
                attempt("open:" + node, lambda: os.open(node, os.O_RDWR))
            attempt("mknod", lambda: os.mknod("/workspace/mem", 0o20666, os.makedev(1, 1)))
            attempt("mkfifo", lambda: os.mkfifo("/workspace/fifo"))
            print("DEVNULL", open("/dev/null", "w").write("discarded"))
            """#)
        t.expectLine("DEV fd null random shm stderr stdin stdout urandom zero")
        for node in ["/dev/tty", "/dev/mem", "/dev/kmsg", "/dev/console", "/dev/sda", "/dev/vda", "/dev/fuse", "/dev/net/tun"] {
            t.expectBlocked("open:" + node, ENOENT)
        }
        t.expectBlocked("mknod", EPERM)
        t.expectBlocked("mkfifo", EPERM)
        t.expectLine("DEVNULL 9")
    }

    // MARK: Writing outside /workspace

    @Test func writeOutsideWorkspace() throws {
        let t = try attempt(#"""
            attempt("create:/", lambda: open("/evil", "w"))
            attempt("create:/usr", lambda: open("/usr/evil", "w"))
            attempt("append:/etc/passwd", lambda: open("/etc/passwd", "a"))
            attempt("create:/etc", lambda: open("/etc/evil", "w"))
            attempt("create:/dev", lambda: open("/dev/evil", "w"))
            attempt("mkdir:/", lambda: os.mkdir("/evil"))
            attempt("unlink:/etc/hostname", lambda: os.unlink("/etc/hostname"))
            attempt("chmod:/etc/passwd", lambda: os.chmod("/etc/passwd", 0o777))
            attempt("utime:/etc/passwd", lambda: os.utime("/etc/passwd", (0, 0)))
            """#)
        for label in ["create:/", "create:/usr", "append:/etc/passwd", "create:/etc", "create:/dev", "mkdir:/",
                      "unlink:/etc/hostname", "chmod:/etc/passwd", "utime:/etc/passwd"] {
            t.expectBlocked(label, EROFS, EACCES)
        }
    }

    @Test func writeProcSysKernel() throws {
        let t = try attempt(#"""
            attempt("core_pattern", lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/workspace/x"))
            attempt("modprobe", lambda: open("/proc/sys/kernel/modprobe", "w").write("/workspace/x"))
            attempt("oom_score_adj", lambda: open("/proc/self/oom_score_adj", "w").write("-1000"))
            attempt("uid_map", lambda: open("/proc/self/uid_map", "w").write("0 0 4294967295"))
            attempt("setgroups", lambda: open("/proc/self/setgroups", "w").write("allow"))
            """#)
        for label in ["core_pattern", "oom_score_adj", "uid_map", "setgroups"] {
            t.expectBlocked(label, EROFS)
        }
        t.expectBlocked("modprobe", EROFS, ENOENT) // absent on kernels built without modules
    }

    @Test func tamperWithWorkerAndStdlib() throws {
        let t = try attempt(#"""
            import capsule_worker, json
            package = os.path.dirname(capsule_worker.__file__)
            attempt("worker-new", lambda: open(package + "/evil.py", "w"))
            attempt("worker-append", lambda: open(package + "/main.py", "a"))
            attempt("stdlib-append", lambda: open(json.__file__, "a"))
            attempt("stdlib-new", lambda: open(os.path.dirname(json.__file__) + "/../capsule_evil.py", "w"))
            attempt("exe-write", lambda: open("/proc/self/exe", "r+b"))
            """#)
        for label in ["worker-new", "worker-append", "stdlib-append", "stdlib-new", "exe-write"] {
            t.expectBlocked(label, EROFS, EACCES)
        }
    }

    @Test func writeInsideWorkspaceWorks() throws {
        let t = try attempt(#"""
            os.makedirs("/workspace/fs-ok/sub", exist_ok=True)
            with open("/workspace/fs-ok/sub/data.txt", "w") as f:
                f.write("round trip")
            print("READBACK", open("/workspace/fs-ok/sub/data.txt").read())
            print("CWD", os.getcwd())
            with open("relative.txt", "w") as f:
                f.write("x")
            print("RELATIVE", os.path.exists("/workspace/relative.txt"))
            print("SHM", open("/dev/shm/capsule-test", "w").write("shm"))
            """#)
        t.expectLine("READBACK round trip")
        t.expectLine("CWD /workspace")
        t.expectLine("RELATIVE True")
        t.expectLine("SHM 3")
    }

    // MARK: Link and path tricks

    @Test func symlinkToShadow() throws {
        let t = try attempt(#"""
            for name in ["shadow-link", "init-root-link"]:
                if os.path.lexists("/workspace/" + name):
                    os.unlink("/workspace/" + name)
            os.symlink("/etc/shadow", "/workspace/shadow-link")
            os.symlink("/proc/1/root/etc/shadow", "/workspace/init-root-link")
            attempt("via-symlink", lambda: open("/workspace/shadow-link").read())
            attempt("via-init-root", lambda: open("/workspace/init-root-link").read())
            attempt("dotdot", lambda: open("/workspace/../../../../etc/shadow").read())
            attempt("proc-self-root", lambda: open("/proc/self/root/../../etc/shadow").read())
            """#)
        t.expectBlocked("via-symlink", ENOENT)
        t.expectBlocked("via-init-root", EACCES)
        t.expectBlocked("dotdot", ENOENT)
        t.expectBlocked("proc-self-root", ENOENT)
    }

    @Test func hardlinkAndRenameAcrossMounts() throws {
        let t = try attempt(#"""
            import json
            open("/workspace/mine", "w").write("x")
            attempt("link-passwd", lambda: os.link("/etc/passwd", "/workspace/passwd-link"))
            attempt("link-stdlib", lambda: os.link(json.__file__, "/workspace/json-link"))
            attempt("rename-over-passwd", lambda: os.rename("/workspace/mine", "/etc/passwd"))
            attempt("rename-out", lambda: os.rename("/workspace/mine", "/usr/mine"))
            """#)
        t.expectBlocked("link-passwd", EXDEV)
        t.expectBlocked("link-stdlib", EXDEV)
        t.expectBlocked("rename-over-passwd", EXDEV, EROFS)
        t.expectBlocked("rename-out", EXDEV, EROFS)
    }

    @Test func setuidBitIsInert() throws {
        // A set-uid file can be made in /workspace, but nothing can execute it and the mount is nosuid.
        let t = try attempt(#"""
            open("/workspace/suid", "w").write("#!/bin/sh\n")
            os.chmod("/workspace/suid", 0o4755)
            print("NOSUID", bool(os.statvfs("/workspace").f_flag & os.ST_NOSUID))
            attempt("exec-suid", lambda: os.execv("/workspace/suid", ["suid"]))
            """#)
        t.expectLine("NOSUID True")
        t.expectBlocked("exec-suid", EPERM)
    }

    // MARK: Filling the disk

    @Test func fillWorkspaceAndExceedFileSize() throws {
        let policy = Sandboxed.policy { $0.workspaceMB = 4; $0.maxFileBytes = 2 << 20 }
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            def write_file(path, mb):
                with open(path, "wb") as f:
                    for _ in range(mb):
                        f.write(b"x" * (1 << 20))
                        f.flush()
            attempt("file-size", lambda: write_file("/workspace/big", 3))
            os.unlink("/workspace/big")
            def fill():
                for i in range(10):
                    write_file("/workspace/part%d" % i, 1)
            attempt("fill", fill)
            print("SIZE-MB", os.statvfs("/workspace").f_blocks * os.statvfs("/workspace").f_frsize >> 20)
            for name in os.listdir("/workspace"):
                os.unlink("/workspace/" + name)
            open("/workspace/after", "w").write("ok")
            print("AFTER", open("/workspace/after").read())
            """#, policy: policy)
        t.expectBlocked("file-size", EFBIG)
        t.expectBlocked("fill", ENOSPC)
        t.expectLine("SIZE-MB 4")
        t.expectLine("AFTER ok")
        t.expectFinishedCleanly()
    }

    @Test func exhaustWorkspaceInodes() throws {
        let policy = Sandboxed.policy { $0.workspaceMB = 1 }
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            def make_files():
                for i in range(100000):
                    open("/workspace/f%d" % i, "w").close()
            attempt("inodes", make_files)
            print("FILES", len(os.listdir("/workspace")))
            """#, policy: policy)
        t.expectBlocked("inodes", ENOSPC)
        let files = Int(t.words("FILES")?.first ?? "") ?? -1
        #expect(files > 0 && files < 1000, "the inode count is bounded too\n\(t)")
        t.expectFinishedCleanly()
    }
}
