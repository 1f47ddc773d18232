// The seccomp filter, applied last. It is an allow-list: every syscall not named here fails with
// EPERM, so syscalls added to future kernels, and the ones DESIGN.md and SECURITY.md list as
// dangerous (execve, ptrace, mount, unshare, bpf, io_uring, keyctl, ...), are refused without
// being named (execve is allowed where the policy lets Python start again, see below). Where an allowed syscall is dangerous with some arguments, the arguments are checked:
// clone may not create namespaces, socket is AF_UNIX only (plus inet with the host network),
// ioctl takes a short list of requests compared on the low 32 bits the kernel actually reads.
// Other ABIs (i386 via int 0x80, x32) do not match the native architecture and kill the process.
// Left out on purpose although harmless-looking: inotify, flock and fcntl's F_NOTIFY and
// F_SETLEASE, which on the read-only binds (the host's own inodes) would let code watch host file
// activity, lock host files outright, or stall host processes that open them.
#include "worker.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>

static const char *const allowed[] = {
    // memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore", "membarrier",
    // files and directories (mounts and Landlock decide where; open, creat and chmod: mode_calls below)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
    "close", "close_range", "lseek", "fsync", "fdatasync", "ftruncate", "truncate",
    "fallocate", "fadvise64", "readahead", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "access", "faccessat", "faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir",
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
    "symlink", "symlinkat", "readlink", "readlinkat", "chown", "fchown",
    "lchown", "fchownat", "utime", "utimes", "utimensat", "futimesat", "umask",
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    "sendfile", "copy_file_range", "dup", "dup2", "dup3", "pipe", "pipe2",
    // waiting and time
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "nanosleep", "clock_nanosleep", "clock_gettime",
    "clock_getres", "gettimeofday", "time", "getitimer", "setitimer", "alarm", "timer_create",
    "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete", "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "futex", "futex_waitv", "sched_yield",
    // processes, threads and signals (inside the sandbox's own pid namespace)
    "fork", "vfork", "exit", "exit_group", "wait4", "waitid", "kill", "tkill", "tgkill", "rt_sigqueueinfo",
    "rt_tgsigqueueinfo", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
    "rt_sigsuspend", "rt_sigtimedwait", "sigaltstack", "pause", "signalfd", "signalfd4", "restart_syscall",
    "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "arch_prctl", "gettid", "getpid",
    "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getpgid",
    "getpgrp", "getsid", "setpgid", "setsid", "getrlimit", "setrlimit", "getrusage", "times", "getpriority",
    "setpriority", "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "getcpu", "capget", "pidfd_open", "pidfd_send_signal",
    // system information
    "uname", "sysinfo", "getrandom",
    // sockets (socket and socketpair are checked below)
    "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt", "getsockopt",
};

static void allow(scmp_filter_ctx ctx, const char *name, unsigned count, const struct scmp_arg_cmp *args) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return; // not a syscall on this architecture
    int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, count, args);
    if (rc < 0) cw_fail("seccomp", -rc, name);
}

void cw_apply_seccomp(const struct cw_config *cfg) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx) cw_fail("seccomp", ENOMEM, "seccomp_init");
    if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0)
        cw_fail("seccomp", EINVAL, "bad-arch action");
    // A binary search over syscall numbers instead of a linear list: every syscall pays for the filter.
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) allow(ctx, allowed[i], 0, NULL);

    // python_subprocess: execve, for Python itself, which Landlock alone lets be executed. Then no
    // memfd_create: a memfd lives on no mount Landlock or noexec governs, so execve of
    // /proc/self/fd/N would run any binary the code wrote into one. execveat stays refused.
    allow(ctx, cfg->python_subprocess ? "execve" : "memfd_create", 0, NULL);

    // Calls that give a file its mode (the argument's position): with a :rw mount, never a
    // set-user-ID or set-group-ID bit, which on a host file would outlast the sandbox (nosuid
    // holds only on the sandbox's own mount). Elsewhere such bits mean nothing: every mount inside is nosuid.
    static const struct { const char *name; unsigned mode_arg; } mode_calls[] = {
        {"open", 2}, {"openat", 3}, {"creat", 1}, {"chmod", 1}, {"fchmod", 1}, {"fchmodat", 2}};
    for (size_t i = 0; i < sizeof mode_calls / sizeof mode_calls[0]; i++) {
        struct scmp_arg_cmp plain_mode = {mode_calls[i].mode_arg, SCMP_CMP_MASKED_EQ, S_ISUID | S_ISGID, 0};
        allow(ctx, mode_calls[i].name, cfg->writable_mounts ? 1 : 0, &plain_mode);
    }

    // Threads and fork, never new namespaces. clone3 passes its flags in memory a filter cannot
    // read, so it answers ENOSYS and glibc falls back to clone.
    const scmp_datum_t namespaces = CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                                    CLONE_NEWUTS | CLONE_NEWCGROUP;
    allow(ctx, "clone", 1, (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_MASKED_EQ, namespaces, 0)});
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name("clone3"), 0);
    if (rc < 0) cw_fail("seccomp", -rc, "clone3");

    allow(ctx, "socket", 1, (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, AF_UNIX)});
    allow(ctx, "socketpair", 1, (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, AF_UNIX)});
    if (cfg->host_network) {
        allow(ctx, "socket", 1, (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, AF_INET)});
        allow(ctx, "socket", 1, (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, AF_INET6)});
    }

    // ioctl: only what Python's own I/O layer asks. TIOCSTI, TIOCLINUX and everything else fail.
    static const unsigned long ioctls[] = {TCGETS, TIOCGWINSZ, FIOCLEX, FIONCLEX, FIONBIO, FIONREAD};
    for (size_t i = 0; i < sizeof ioctls / sizeof ioctls[0]; i++)
        allow(ctx, "ioctl", 1, (struct scmp_arg_cmp[]){SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, ioctls[i])});

    // prctl: names, dumpability reads and our own safety knobs; nothing that changes credentials.
    static const int prctls[] = {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_SET_PDEATHSIG, PR_GET_PDEATHSIG,
                                 PR_GET_NO_NEW_PRIVS, PR_SET_NO_NEW_PRIVS, PR_GET_SECCOMP, PR_CAPBSET_READ,
                                 PR_GET_TIMERSLACK, PR_SET_VMA};
    for (size_t i = 0; i < sizeof prctls / sizeof prctls[0]; i++)
        allow(ctx, "prctl", 1, (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)prctls[i])});

    // fcntl: descriptor flags, status flags, duplication, POSIX and OFD record locks (sqlite needs
    // them), pipe sizes and memfd seals. Not F_NOTIFY, F_SETLEASE, F_SETOWN or F_SETSIG.
    static const int fcntls[] = {F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK,
                                 F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_GETPIPE_SZ, F_SETPIPE_SZ,
                                 F_ADD_SEALS, F_GET_SEALS};
    for (size_t i = 0; i < sizeof fcntls / sizeof fcntls[0]; i++)
        allow(ctx, "fcntl", 1, (struct scmp_arg_cmp[]){SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, (scmp_datum_t)fcntls[i])});

    // prlimit64 on this process only (pid 0).
    allow(ctx, "prlimit64", 1, (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, 0)});

    rc = seccomp_load(ctx);
    if (rc < 0) cw_fail("seccomp", -rc, "seccomp_load");
    seccomp_release(ctx);
}
