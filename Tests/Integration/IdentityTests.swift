// Who the code is inside the sandbox: credentials, namespaces, environment, descriptors.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

@Suite("Identity and isolation") struct IdentityTests {
    let shared = SharedSession.misc

    @Test func noCapabilitiesNoNewPrivsSeccomp() throws {
        let t = try shared.run(#"""
            import os
            def report(tag):
                fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
                for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"]:
                    print(tag, key, fields[key].strip())
            report("PARENT")
            pid = os.fork()
            if pid == 0:
                report("CHILD")
                os._exit(0)
            os.waitpid(pid, 0)
            """#)
        t.expectFinishedCleanly()
        for tag in ["PARENT", "CHILD"] {
            for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                t.expectLine("\(tag) \(key) 0000000000000000")
            }
            t.expectLine("\(tag) NoNewPrivs 1")
            t.expectLine("\(tag) Seccomp 2")
        }
    }

    @Test func noNewPrivsCannotBeCleared() throws {
        let t = try shared.run(Python.prelude + Python.syscallPrelude + #"""
            syscall(157, 38, 0, 0, 0, 0)   # prctl(PR_SET_NO_NEW_PRIVS, 0): the kernel refuses
            print("NNP", [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1])
            import resource
            for name in ["RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE"]:
                which = getattr(resource, name)
                attempt("raise:" + name, lambda: resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)))
            """#)
        t.expectLine("RESULT -1 \(EINVAL)")
        t.expectLine("NNP 1")
        for name in ["RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE"] {
            // resource.setrlimit turns EPERM into ValueError("not allowed to raise maximum limit").
            #expect(t.line("raise:" + name) == "raise:\(name) FAILED ValueError not allowed to raise maximum limit", "\(t)")
        }
    }

    @Test func rootInsideIsUnprivilegedOutside() throws {
        try Sandboxed.withSession { session in
            let t = Sandboxed.run(#"""
                import os
                print("IDS", os.getuid(), os.geteuid(), os.getgid(), os.getegid(), *os.getgroups())
                print("UID_MAP", *open("/proc/self/uid_map").read().split())
                print("GID_MAP", *open("/proc/self/gid_map").read().split())
                print("SETGROUPS", open("/proc/self/setgroups").read().strip())
                st = os.stat("/workspace")
                print("WORKSPACE_OWNER", st.st_uid, st.st_gid)
                import json
                print("HOST_FILE_OWNER", os.stat(json.__file__).st_uid)
                """#, in: session)
            t.expectFinishedCleanly()
            t.expectLine("IDS 0 0 0 0")
            let expected: UInt32 = getuid() == 0 ? 2_000_000_000 + UInt32(session.pid) : getuid()
            #expect(expected != 0)
            t.expectLine("UID_MAP 0 \(expected) 1")
            t.expectLine("GID_MAP 0 \(getuid() == 0 ? expected : getgid()) 1")
            t.expectLine("SETGROUPS deny")
            t.expectLine("WORKSPACE_OWNER 0 0")
            t.expectLine("HOST_FILE_OWNER 65534") // host root is unmapped: the overflow uid
        }
    }

    @Test func ownPidAndCgroupNamespaces() throws {
        try Sandboxed.withSession { session in
            let t = Sandboxed.run(#"""
                import os
                print("PIDS", os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0))
                for line in open("/proc/self/cgroup").read().splitlines():
                    print("CGROUP", line.split(":", 2)[2])
                """#, in: session)
            t.expectFinishedCleanly()
            t.expectLine("PIDS 2 1 1 1")
            let paths = t.lines.filter { $0.hasPrefix("CGROUP ") }.map { String($0.dropFirst(7)) }
            #expect(!paths.isEmpty)
            for path in paths {
                // The session's own group at most; no name of the host's cgroup tree.
                let names = path.split(separator: "/").filter { $0 != ".." }
                #expect(names.isEmpty || names == ["capsule", "s\(session.pid)"], "cgroup path `\(path)` names host groups\n\(t)")
            }
        }
    }

    @Test func hostnameAndUTSNamespace() throws {
        let t = try shared.run(#"""
            import os, socket
            print("UNAME", os.uname().nodename)
            print("GETHOSTNAME", socket.gethostname())
            print("ETC_HOSTNAME", open("/etc/hostname").read().strip())
            print("DOMAIN", open("/proc/sys/kernel/domainname").read().strip())
            """#)
        t.expectLine("UNAME capsule")
        t.expectLine("GETHOSTNAME capsule")
        t.expectLine("ETC_HOSTNAME capsule")
        t.expectLine("DOMAIN capsule")
    }

    @Test func environmentIsEmpty() throws {
        #expect(getenv("PATH") != nil, "positive control: the test process has PATH")
        let t = try shared.run(Python.prelude + #"""
            print("ENV", *sorted(os.environ))
            print("ENVIRONB", *sorted(os.environb))
            attempt("proc-environ", lambda: len(open("/proc/self/environ", "rb").read()))
            """#)
        t.expectLine("ENV")
        t.expectLine("ENVIRONB")
        // The process is not dumpable, so even its own environ file is closed; if readable, it is empty.
        #expect(t.line("proc-environ") == "proc-environ BLOCKED \(EACCES)" || t.line("proc-environ") == "proc-environ SUCCEEDED 0",
                "\(t)")
    }

    @Test func inheritedDescriptorsAreClosed() throws {
        // A descriptor the supervisor's process has open without O_CLOEXEC must not reach the code.
        let secret = open("/etc/passwd", O_RDONLY)
        try #require(secret >= 0)
        defer { close(secret) }
        let t = try Sandboxed.runFresh(Python.prelude + #"""
            fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
            print("FDS", *fds)
            for fd in range(3):
                print("STDIO", fd, os.readlink("/proc/self/fd/%d" % fd))
            print("CHANNEL", os.readlink("/proc/self/fd/3").split(":")[0])
            for fd in range(4, 64):
                attempt("fd%d" % fd, lambda: os.fstat(fd))
            attempt("secret", lambda: os.read(\#(secret), 100))
            """#)
        t.expectFinishedCleanly()
        // 0-2, the channel, and the descriptor os.listdir itself used.
        let fds = (t.words("FDS") ?? []).compactMap { Int32($0) }
        #expect(fds.count == 5 && fds.starts(with: [0, 1, 2, 3]), "\(t)")
        t.expectLine("STDIO 0 /dev/null")
        for fd in 1..<3 { #expect(t.line("STDIO \(fd)")?.hasPrefix("STDIO \(fd) pipe:[") == true, "\(t)") }
        t.expectLine("CHANNEL socket")
        for fd in 4..<64 { t.expectBlocked("fd\(fd)", EBADF) }
        t.expectBlocked("secret", EBADF)
    }

    @Test func stdioReachesOnlyTheSupervisor() throws {
        // fd 0 is /dev/null; fds 1 and 2 are pipes to the supervisor, which delivers what arrives
        // there as the code's output (counted and filtered like the rest, OrdinaryPythonTests).
        let t = try shared.run(#"""
            import os
            print("WROTE", os.write(1, b"DIRECT-STDOUT\n"), os.write(2, b"DIRECT-STDERR\n"))
            print("READ", os.read(0, 100))
            """#)
        t.expectFinishedCleanly()
        #expect(t.lines == ["DIRECT-STDOUT", "WROTE 14 14", "READ b''"], "\(t)")
        #expect(t.stderr == "DIRECT-STDERR\n", "\(t)")
    }

    @Test func mountTableIsReadOnly() throws {
        let t = try shared.run(#"""
            for line in open("/proc/self/mounts"):
                device, target, kind, options = line.split()[:4]
                writable = "rw" in options.split(",")
                if writable:
                    print("WRITABLE", target)
            """#)
        t.expectFinishedCleanly()
        let writable = Set(t.lines.filter { $0.hasPrefix("WRITABLE ") })
        // Only the scratch space and the four device nodes take writes.
        #expect(writable == ["WRITABLE /workspace", "WRITABLE /tmp", "WRITABLE /dev/shm", "WRITABLE /dev/null", "WRITABLE /dev/zero",
                             "WRITABLE /dev/random", "WRITABLE /dev/urandom"], "\(t)")
    }
}
