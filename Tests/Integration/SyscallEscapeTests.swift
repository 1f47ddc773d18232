// Calling the kernel directly (ctypes `syscall`, raw machine code, other syscall ABIs): every
// dangerous syscall must fail with the seccomp filter's errno, or kill the process.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

/// One direct syscall and the errno the sandbox must answer with.
struct SyscallAttack: Sendable, CustomTestStringConvertible {
    let name: String
    /// Python arguments of `syscall(...)`: the number first.
    let call: String
    let errno: Int32

    init(_ name: String, _ call: String, _ errno: Int32 = EPERM) {
        self.name = name
        self.call = call
        self.errno = errno
    }

    var testDescription: String { name }
}

// Flag values from <linux/sched.h>, <sys/socket.h>, <asm-generic/ioctls.h>.
private let CLONE_NEWNS = 0x0002_0000, CLONE_NEWUTS = 0x0400_0000, CLONE_NEWIPC = 0x0800_0000
private let CLONE_NEWUSER = 0x1000_0000, CLONE_NEWPID = 0x2000_0000, CLONE_NEWNET = 0x4000_0000
private let CLONE_NEWCGROUP = 0x0200_0000, SIGCHLD_ = 17

extension SyscallAttack {
    static let all: [SyscallAttack] = [
        // mounts and the root
        .init("mount a tmpfs over /workspace", #"165, b"none", b"/workspace", b"tmpfs", 0, 0"#),
        .init("mount proc somewhere new", #"165, b"proc", b"/workspace", b"proc", 0, 0"#),
        .init("umount2 /proc to uncover what is below", #"166, b"/proc", 2"#),
        .init("pivot_root into /workspace", #"155, b"/workspace", b"/workspace""#),
        .init("chroot to /workspace (chroot-break setup)", #"161, b"/workspace""#),
        .init("fsopen (new mount API)", #"430, b"tmpfs", 0"#),
        .init("fsmount", "432, 3, 0, 0"),
        .init("fsconfig", "431, 3, 6, 0, 0, 0"),
        .init("fspick /", #"433, -100, b"/", 0"#),
        .init("open_tree clone of /", #"428, -100, b"/", 1"#),
        .init("move_mount", #"429, -100, b"/proc", -100, b"/workspace", 0"#),
        .init("mount_setattr to make / writable", #"442, -100, b"/", 0, buf, 32"#),
        .init("listmount (host mount ids)", "458, buf, buf2, 64, 0"),
        .init("statmount", "457, buf, buf2, 4096, 0"),
        // namespaces
        .init("unshare(CLONE_NEWUSER) for fresh capabilities", "272, \(CLONE_NEWUSER)"),
        .init("unshare(CLONE_NEWNS)", "272, \(CLONE_NEWNS)"),
        .init("unshare(CLONE_NEWNET)", "272, \(CLONE_NEWNET)"),
        .init("unshare(CLONE_NEWPID)", "272, \(CLONE_NEWPID)"),
        .init("setns into another namespace", "308, 3, 0"),
        .init("clone(CLONE_NEWUSER|CLONE_NEWNS)", "56, \(CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD_), 0, 0, 0, 0"),
        .init("clone(CLONE_NEWPID)", "56, \(CLONE_NEWPID | SIGCHLD_), 0, 0, 0, 0"),
        .init("clone(CLONE_NEWNET|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWCGROUP)",
              "56, \(CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP | SIGCHLD_), 0, 0, 0, 0"),
        .init("clone3 (flags hidden from the filter in memory)", "435, buf, 88", ENOSYS),
        // debugging other processes
        .init("ptrace(PTRACE_TRACEME)", "101, 0, 0, 0, 0"),
        .init("ptrace(PTRACE_ATTACH, 1)", "101, 16, 1, 0, 0"),
        .init("ptrace(PTRACE_SEIZE, 1)", "101, 0x4206, 1, 0, 0"),
        .init("process_vm_readv from pid 1", "310, 1, buf, 1, buf2, 1, 0"),
        .init("process_vm_writev into pid 1", "311, 1, buf, 1, buf2, 1, 0"),
        .init("kcmp", "312, 1, 2, 0, 0, 0"),
        .init("pidfd_getfd (steal pid 1's channel)", "438, 3, 3, 0"),
        .init("process_madvise", "440, 3, buf, 1, 0, 0"),
        // kernel attack surface
        .init("bpf(BPF_PROG_LOAD)", "321, 5, buf, 128"),
        .init("bpf(BPF_MAP_CREATE)", "321, 0, buf, 128"),
        .init("io_uring_setup", "425, 8, buf"),
        .init("io_uring_enter", "426, 0, 1, 0, 0, 0, 0"),
        .init("io_uring_register", "427, 0, 0, 0, 0"),
        .init("io_setup (legacy AIO)", "206, 16, buf"),
        .init("keyctl(KEYCTL_GET_KEYRING_ID)", "250, 0, -3, 0"),
        .init("add_key", #"248, b"user", b"capsule", b"secret", 6, -3"#),
        .init("request_key", #"249, b"user", b"capsule", 0, 0"#),
        .init("perf_event_open", "298, buf, 0, -1, -1, 0"),
        .init("userfaultfd", "323, 0"),
        .init("fanotify_init", "300, 0, 0"),
        .init("vmsplice (Dirty Pipe family)", "278, 1, buf, 1, 0"),
        .init("splice", "275, 0, 0, 1, 0, 16, 0"),
        .init("tee", "276, 0, 1, 16, 0"),
        .init("modify_ldt (16-bit segments)", "154, 1, buf, 16"),
        .init("memfd_secret", "447, 0"),
        .init("migrate_pages", "256, 1, 64, buf, buf2"),
        .init("move_pages", "279, 1, 1, buf, 0, buf2, 0"),
        .init("mbind", "237, 0, 4096, 0, 0, 0, 0"),
        .init("set_mempolicy", "238, 0, 0, 0"),
        .init("landlock_create_ruleset (version query)", "444, 0, 0, 1"),
        .init("seccomp(SECCOMP_SET_MODE_FILTER)", "317, 1, 0, 0"),
        .init("a syscall number no kernel has yet (allow-list, not deny-list)", "1000, 0, 0, 0"),
        // modules, kexec, the machine
        .init("kexec_load", "246, 0, 0, 0, 0"),
        .init("kexec_file_load", #"320, 0, 0, 1, b"", 0"#),
        .init("init_module", #"175, buf, 16, b"""#),
        .init("finit_module", #"313, 0, b"", 0"#),
        .init("delete_module", #"176, b"ext4", 0"#),
        .init("reboot(CAD_OFF)", "169, 0xfee1dead, 672274793, 0, 0"),
        .init("swapon", #"167, b"/workspace/swap", 0"#),
        .init("acct", #"163, b"/workspace/acct""#),
        .init("quotactl", #"179, 0, b"/", 0, 0"#),
        .init("syslog(SYSLOG_ACTION_READ_ALL)", "103, 3, buf, 100"),
        .init("iopl(3)", "172, 3"),
        .init("ioperm", "173, 0, 1024, 1"),
        .init("settimeofday", "164, buf, 0"),
        .init("clock_settime", "227, 0, buf"),
        .init("adjtimex (read-only mode; still refused)", "159, buf"),
        .init("sethostname", #"170, b"evil", 4"#),
        .init("setdomainname", #"171, b"evil", 4"#),
        .init("vhangup", "153"),
        .init("uselib", #"134, b"/workspace/lib""#),
        .init("lookup_dcookie", "212, 0, buf, 16"),
        .init("ioprio_set", "251, 1, 0, 0"),
        .init("sched_setattr", "314, 0, buf, 0"),
        .init("sched_setaffinity", "203, 0, 8, buf"),
        // file handles (the "shocker" container escape)
        .init("open_by_handle_at", "304, 3, buf, 0"),
        .init("name_to_handle_at", #"303, -100, b"/", buf, buf2, 0"#),
        // executing programs
        .init("execve /bin/sh", #"59, b"/bin/sh", 0, 0"#),
        .init("execveat", #"322, -100, b"/bin/sh", 0, 0, 0"#),
        .init("personality(ADDR_NO_RANDOMIZE)", "135, 0x0040000"),
        .init("personality query", "135, 0xffffffff"),
        // sockets beyond AF_UNIX
        .init("socket(AF_INET)", "41, 2, 1, 0"),
        .init("socket(AF_INET6)", "41, 10, 1, 0"),
        .init("socket(AF_NETLINK)", "41, 16, 3, 0"),
        .init("socket(AF_PACKET)", "41, 17, 3, 0"),
        .init("socket(AF_VSOCK)", "41, 40, 1, 0"),
        .init("socket(AF_ALG)", "41, 38, 5, 0"),
        .init("socket(AF_INET) with high bits to dodge the argument check", "41, 0x100000002, 1, 0"),
        .init("socket(AF_UNIX) with high bits set", "41, 0x100000001, 1, 0"),
        .init("socketpair(AF_INET)", "53, 2, 1, 0, buf"),
        // terminals
        .init("ioctl TIOCSTI on fd 0", #"16, 0, 0x5412, b"x""#),
        .init("ioctl TIOCLINUX on fd 0", "16, 0, 0x541C, buf"),
        .init("ioctl TIOCSTI with high bits set", #"16, 0, 0x100005412, b"x""#),
        .init("ioctl TIOCLINUX with high bits set", "16, 0, 0x10000541C, buf"),
        .init("ioctl TIOCSCTTY (steal a terminal)", "16, 0, 0x540E, 1"),
        // credentials and process attributes
        .init("setuid(12345)", "105, 12345"),
        .init("setgid(12345)", "106, 12345"),
        .init("setresuid", "117, 1, 1, 1"),
        .init("setreuid", "113, 1, 1"),
        .init("setfsuid", "122, 1"),
        .init("setgroups", "116, 0, 0"),
        .init("capset", "126, buf, buf2"),
        .init("prctl(PR_SET_SECUREBITS, 0)", "157, 28, 0"),
        .init("prctl(PR_SET_DUMPABLE, 1)", "157, 4, 1"),
        .init("prctl(PR_SET_KEEPCAPS, 1)", "157, 8, 1"),
        .init("prctl(PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN)", "157, 47, 2, 21, 0, 0"),
        .init("prctl(PR_SET_MM)", "157, 35, 8, 0, 0, 0"),
        .init("prctl(PR_SET_PTRACER, any)", "157, 0x59616d61, -1"),
        .init("prctl(PR_SET_SECCOMP) strict mode", "157, 22, 1"),
        .init("prctl(PR_SET_SECUREBITS) with high bits to dodge the argument check", "157, 0x10000001c, 0"),
        .init("prlimit64 on pid 1", "302, 1, 9, 0, buf"),
        .init("prlimit64 on pid 0 spelt with high bits", "302, 0x100000000, 9, 0, buf"),
        .init("mknod a character device", #"133, b"/workspace/mem", 0o20666, 0x101"#),
        // System V IPC and message queues
        .init("msgget", "68, 0, 0o1000"),
        .init("shmget", "29, 0, 4096, 0o1000"),
        .init("semget", "64, 0, 1, 0o1000"),
        .init("mq_open", #"240, b"capsule", 0o100, 0o600, 0"#),
    ]
}

@Suite("Direct syscalls") struct SyscallEscapeTests {
    @Test("the seccomp filter refuses", arguments: SyscallAttack.all)
    func refused(_ attack: SyscallAttack) throws {
        let t = try SharedSession.syscalls.run(Python.syscallPrelude + "syscall(\(attack.call))\n")
        t.expectFinishedCleanly()
        t.expectLine("RESULT -1 \(attack.errno)")
    }

    /// The helper itself works: allowed syscalls succeed through the same path.
    @Test func allowedSyscallsStillWork() throws {
        let t = try SharedSession.syscalls.run(Python.syscallPrelude + #"""
            syscall(39)                    # getpid
            syscall(302, 0, 9, 0, buf)     # prlimit64(0, RLIMIT_AS): read our own limit
            fd = syscall(41, 1, 1, 0)      # socket(AF_UNIX)
            import os; os.close(fd)
            """#)
        t.expectFinishedCleanly()
        #expect(t.lines.count == 3 && t.lines[0] == "RESULT 2 0" && t.lines[1] == "RESULT 0 0", "\(t)")
        #expect(t.lines.count == 3 && Int(t.lines[2].split(separator: " ")[1]) ?? -1 > 2, "\(t)")
    }

    /// libc is not the enforcement point: the `syscall` instruction itself is filtered.
    @Test func rawSyscallInstruction() throws {
        let t = try SharedSession.syscalls.run(Python.machineCodePrelude + #"""
            # mov eax, nr; mov edi, arg0; mov esi, arg1; xor edx, edx; syscall; ret
            def raw(nr, a0=0, a1=0):
                return machine_code(b"\xb8" + imm32(nr) + b"\xbf" + imm32(a0) + b"\xbe" + imm32(a1)
                                    + b"\x31\xd2\x0f\x05\xc3")()
            print("RAW-UNSHARE", raw(272, 0x10000000))
            print("RAW-SOCKET-INET", raw(41, 2, 1))
            print("RAW-GETPID", raw(39))
            """#)
        t.expectFinishedCleanly()
        t.expectLine("RAW-UNSHARE \(-EPERM)")
        t.expectLine("RAW-SOCKET-INET \(-EPERM)")
        t.expectLine("RAW-GETPID 2")
    }

    /// i386 syscalls through `int 0x80` from a 64-bit process: a foreign ABI kills the process.
    @Test func int80CompatABI() throws {
        let t = try Sandboxed.runFresh(Python.machineCodePrelude + #"""
            # mov eax, 310 (i386 unshare); mov ebx, CLONE_NEWUSER; int 0x80; ret
            code = b"\xb8" + imm32(310) + b"\xbb" + imm32(0x10000000) + b"\xcd\x80\xc3"
            f = machine_code(code)
            print("CALLING")
            print("RETURNED", f())
            """#)
        t.expectLine("CALLING")
        #expect(t.line("RETURNED") == nil, "int 0x80 returned\n\(t)")
        #expect(t.outcome == .workerEnded(exitCode: nil, signal: SIGSYS), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }

    /// int 0x80 with a harmless i386 syscall (getpid = 20) is killed just the same.
    @Test func int80HarmlessSyscallAlsoKills() throws {
        let t = try Sandboxed.runFresh(Python.machineCodePrelude + #"""
            f = machine_code(b"\xb8" + imm32(20) + b"\xcd\x80\xc3")
            print("CALLING")
            print("RETURNED", f())
            """#)
        t.expectLine("CALLING")
        #expect(t.line("RETURNED") == nil, "int 0x80 returned\n\(t)")
        #expect(t.outcome == .workerEnded(exitCode: nil, signal: SIGSYS), "\(t)")
    }

    /// The x32 ABI: native syscall numbers with bit 30 set.
    @Test func x32ABI() throws {
        let t = try Sandboxed.runFresh(Python.syscallPrelude + #"""
            print("CALLING", flush=True)
            syscall(0x40000000 | 272, 0x10000000)
            print("RETURNED")
            """#)
        t.expectLine("CALLING")
        #expect(t.line("RESULT") == nil && t.line("RETURNED") == nil, "the x32 syscall returned\n\(t)")
        #expect(t.outcome == .workerEnded(exitCode: nil, signal: SIGSYS), "\(t)")
        Sandboxed.expectNewSessionWorks()
    }
}
