// The order of the stages is the security argument, so it is stated once, here.
// This runs as pid 1 of the new pid namespace, in new user, mount, ipc, uts (and net) namespaces,
// after the launcher has written the id maps; it moves the process into the session's cgroup
// meanwhile, and no user code runs before that is done.
#include "worker.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

// The launcher writes one byte when the id maps are written, and one when the process is in the
// session's cgroup (that migration waits for an RCU grace period, so it overlaps building the root).
static void wait_for_launcher(int go_fd, const char *stage) {
    char go;
    ssize_t n;
    do n = read(go_fd, &go, 1); while (n < 0 && errno == EINTR);
    if (n != 1) cw_fail(stage, n < 0 ? errno : EPIPE, "the launcher did not release the sandbox");
}

static void become_namespace_root(void) {
    CW_TRY("set-ids", setresgid(0, 0, 0));
    CW_TRY("set-ids", setresuid(0, 0, 0));
}

static void isolate_session(void) {
    CW_TRY("setsid", setsid()); // no controlling terminal, own process group
    CW_TRY("hostname", sethostname("capsule", 7));
    CW_TRY("hostname", setdomainname("capsule", 7));
    // Not dumpable: Python (pid 2) cannot open /proc/1/fd/* or /proc/1/mem of pid 1, whose status
    // pipe stays open; the setresuid above already cleared it, this says so on purpose.
    CW_TRY("dumpable", prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
}

// stdin is /dev/null; stdout and stderr stay the pipes the supervisor reads (it counts and filters
// what arrives there like any other output), so C code and os.write(1, ...) reach the user.
static void keep_only_channel_fds(void) {
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0) cw_fail("stdio", errno, "/dev/null");
    CW_TRY("stdio", dup2(null, 0));
    if (null > 0) close(null);
    // Everything but the channel (3), the status pipe (4) and the launcher's go pipe (5) goes;
    // the last two are closed in the Python process before any user code runs.
    CW_TRY("close-fds", (int)syscall(SYS_close_range, CW_GO_FD + 1, ~0U, 0));
}

// The kernel clears the parent-death signal at a credential change (the setresuid above), so it
// is set again once the credentials are final; the lifeline then says whether the launcher died
// before that (its end of the pipe closed), and the sandbox does not go on without it.
static void die_with_launcher(int lifeline) {
    CW_TRY("parent-death-signal", prctl(PR_SET_PDEATHSIG, SIGKILL));
    struct pollfd end = {.fd = lifeline, .events = POLLIN};
    if (lifeline < 0 || poll(&end, 1, 0) != 0) cw_fail("parent-death-signal", ESRCH, "the launcher is gone");
    close(lifeline);
}

static void set_environment(const struct cw_config *cfg) {
    CW_TRY("environment", clearenv());
    for (size_t i = 0; i < cfg->n_env; i++) CW_TRY("environment", putenv(cfg->env[i]));
}

static void on_signal(int sig) { (void)sig; } // a handler, so pid 1 is sent these at all

// pid 1 initializes Python (overlapping the launcher's cgroup migration), waits until it is in
// the session's cgroup, and forks the process that runs the worker. It then stays a small C
// reaper: it forwards SIGINT to Python, reaps orphans, and reports how Python ended. When it
// exits the kernel kills everything left in the namespace.
static _Noreturn void run_init(const struct cw_config *cfg, int go_fd) {
    void *module = cw_python_start(cfg);
    wait_for_launcher(go_fd, "wait-for-cgroup"); // no user code runs outside the cgroup
    close(go_fd);

    sigset_t set, none;
    sigemptyset(&set);
    sigemptyset(&none);
    for (size_t i = 0; i < CW_N_HANDLED_SIGNALS; i++) sigaddset(&set, cw_handled_signals[i]);
    sigprocmask(SIG_BLOCK, &set, NULL); // (the launcher cloned us with these blocked already)

    pid_t python = cw_python_fork();
    if (python < 0) cw_fail("fork-python", errno, "fork");
    if (python == 0) {
        sigprocmask(SIG_SETMASK, &none, NULL);
        cw_python_serve(module, cfg->max_frame_bytes);
    }
    for (size_t i = 0; i < CW_N_HANDLED_SIGNALS; i++) signal(cw_handled_signals[i], on_signal);
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);
        // Only the launcher, outside the namespace, may stop the sandbox: a signal from an
        // ancestor namespace arrives with si_pid 0, one from the code itself with its pid.
        if (sig != SIGCHLD && info.si_pid != 0) continue;
        if (sig == SIGINT) {
            kill(python, SIGINT);
        } else if (sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) {
            kill(-1, SIGKILL);
            cw_status("signal %d", SIGKILL);
            _exit(128 + SIGKILL);
        } else if (sig == SIGCHLD) {
            int status;
            pid_t pid;
            struct rusage usage;
            while ((pid = wait4(-1, &status, WNOHANG, &usage)) > 0) {
                if (pid != python) continue;
                if (WIFSIGNALED(status)) {
                    // RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one if SIGXCPU was
                    // ignored. The CPU time used tells a limit from the code signalling itself.
                    int term = WTERMSIG(status);
                    long long used_us = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000LL +
                                        usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
                    // The kernel counts in ticks; allow it 50 ms of rounding.
                    if ((term == SIGXCPU || term == SIGKILL) && used_us >= (long long)cfg->cpu_seconds * 1000000LL - 50000)
                        cw_status("cpu-limit");
                    cw_status("signal %d", WTERMSIG(status));
                    _exit(128 + WTERMSIG(status));
                }
                cw_status("exit %d", WEXITSTATUS(status));
                _exit(WEXITSTATUS(status));
            }
        }
    }
}

_Noreturn void cw_sandbox_main(struct cw_config *cfg, int go_fd) {
    wait_for_launcher(go_fd, "wait-for-id-maps");
    if (go_fd != CW_GO_FD) {
        CW_TRY("go-pipe", dup2(go_fd, CW_GO_FD));
        close(go_fd);
    }
    cw_open_sources(cfg);            // still with the launcher's credentials, see mounts.c
    become_namespace_root();         // from here on, host files see an unprivileged uid
    isolate_session();               // session, hostname, not dumpable
    cw_build_root(cfg);              // tmpfs root, read-only binds, :rw mounts, /workspace, /tmp, /dev, /proc, pivot_root
    cw_share_workspace(cfg);         // --output-dir: /workspace/out, and the workspace's descriptor to the launcher
    cw_set_rlimits(cfg);             // memory, CPU, fds, processes, file size
    cw_apply_landlock(cfg);          // needs CAP_SYS_ADMIN in the namespace, so before the drop
    cw_drop_capabilities();          // every set, bounding and ambient, securebits locked
    die_with_launcher(cfg->lifeline_fd); // the parent-death signal again, the credentials final
    CW_TRY("no-new-privs", prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    keep_only_channel_fds();         // stdin /dev/null, output pipes; only the channel, status and go pipes besides
    set_environment(cfg);            // empty, plus what the policy lists
    cw_apply_seccomp(cfg);           // last: nothing after this needs a refused syscall
    run_init(cfg, CW_GO_FD);         // Python starts; user code waits for the cgroup
}
