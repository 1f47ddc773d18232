// `capsule-worker --probe`: which kernel features work on this host, one line each,
//   <feature> yes|no <detail>
// found by trying each one in a short-lived child, never by reading configuration.
#include "worker.h"
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Runs fn in a child created with the given clone flags; the child's exit status is the answer.
static int try_in_child(unsigned long flags, int (*fn)(void)) {
    pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid < 0) return errno;
    if (pid == 0) _exit(fn ? fn() : 0);
    int status;
    if (waitpid(pid, &status, 0) < 0) return errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

static int load_seccomp(void) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return 1;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(getppid), 0) < 0) return 2;
    if (seccomp_load(ctx) < 0) return 3;
    return (syscall(SYS_getppid) == -1 && errno == EPERM) ? 0 : 4;
}

static void report(const char *feature, int err, const char *what) {
    if (err == 0) printf("%s yes %s\n", feature, what);
    else printf("%s no %s (%s)\n", feature, what, err < 256 && err > 0 ? strerror(err) : "failed");
}

int cw_probe(void) {
    // Each is tried inside a new user namespace, as the sandbox creates it; the detail says what it isolates.
    static const struct { const char *name; unsigned long flag; const char *detail; } namespaces[] = {
        {"user-namespace", 0, "uid 0 inside is an unprivileged id outside"},
        {"pid-namespace", CLONE_NEWPID, "the code sees and signals only its own processes"},
        {"net-namespace", CLONE_NEWNET, "an empty network stack: no network unless the policy says \"host\""},
        {"mount-namespace", CLONE_NEWNS, "a private mount table for the read-only root"},
        {"ipc-namespace", CLONE_NEWIPC, "private System V IPC and POSIX message queues"},
        {"uts-namespace", CLONE_NEWUTS, "a hostname of its own"},
        {"cgroup-namespace", CLONE_NEWCGROUP, "/proc/self/cgroup shows no host cgroup names"}};
    for (size_t i = 0; i < sizeof namespaces / sizeof namespaces[0]; i++)
        report(namespaces[i].name, try_in_child(CLONE_NEWUSER | namespaces[i].flag, NULL), namespaces[i].detail);
    report("seccomp", try_in_child(0, load_seccomp), "filter loaded and enforced");
    int abi = cw_landlock_abi();
    char detail[64];
    snprintf(detail, sizeof detail, "ABI %d", abi);
    report("landlock", abi > 0 ? 0 : ENOSYS, abi > 0 ? detail : "not enabled in this kernel");

    struct cw_config cfg = {.memory_mb = 64, .max_processes = 8};
    struct cw_cgroup cgroup;
    char why[512];
    if (cw_cgroup_create(&cgroup, &cfg, why, sizeof why)) {
        printf("cgroup-memory yes %s (%s)\n", cgroup.v2 ? "cgroup v2" : "cgroup v1", cgroup.memory);
        if (cgroup.v2 || cgroup.pids[0]) printf("cgroup-pids yes %s\n", cgroup.v2 ? "cgroup v2" : "cgroup v1");
        else printf("cgroup-pids no no pids controller; RLIMIT_NPROC still applies\n");
        cw_cgroup_remove(&cgroup);
    } else {
        printf("cgroup-memory no %s; RLIMIT_AS still applies\n", why);
        printf("cgroup-pids no %s; RLIMIT_NPROC still applies\n", why);
    }
    return 0;
}
