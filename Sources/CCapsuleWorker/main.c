// capsule-worker: started by the supervisor with the channel socket on fd 3 and the status pipe
// on fd 4. This process (the launcher) stays on the host: it reads the limits from argv, works out
// what the new root must hold, clones the sandbox into new namespaces, writes its id maps, places
// it in a cgroup, releases it, forwards signals, and reports how it ended.
#include "worker.h"
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <patchlevel.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SESSION_UID_BASE 2000000000u // host ids of sandboxes when the supervisor is root
#define NOBODY_ID 65534u             // the fallback where those ids are not mapped (rootless containers)
#define PROBE_USAGE "capsule-worker --probe"

int cw_probe(void); // probe.c

static unsigned long parse_number(const char *flag, const char *text, unsigned long min, unsigned long max) {
    char *end;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (errno || *end || end == text || text[0] == '-' || value < min || value > max) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s must be a whole number from %lu to %lu, not '%s'", flag, min, max, text);
        cw_fail("arguments", EINVAL, detail);
    }
    return value;
}

static void append(char ***list, size_t *count, char *item) {
    *list = realloc(*list, (*count + 1) * sizeof **list);
    if (!*list) cw_fail("arguments", ENOMEM, "realloc");
    (*list)[(*count)++] = item;
}

static void add_python_dir(struct cw_config *cfg, char *inside, char *source) {
    if (inside[0] != '/' || source[0] != '/') cw_fail("arguments", EINVAL, "a python path must be absolute");
    cfg->python_dirs = realloc(cfg->python_dirs, (cfg->n_python_dirs + 1) * sizeof *cfg->python_dirs);
    if (!cfg->python_dirs) cw_fail("arguments", ENOMEM, "realloc");
    cfg->python_dirs[cfg->n_python_dirs++] = (struct cw_python_dir){inside, source};
}

// --environment NAME=HOST: the packages at HOST appear at /opt/capsule/envs/NAME/site-packages.
static void add_environment(struct cw_config *cfg, char *value) {
    char *equals = strchr(value, '=');
    if (!equals || equals == value || strchr(value, '/') < equals) cw_fail("arguments", EINVAL, "--environment NAME=DIR");
    *equals = 0;
    char inside[512];
    if (snprintf(inside, sizeof inside, "/opt/capsule/envs/%s/site-packages", value) >= (int)sizeof inside)
        cw_fail("arguments", ENAMETOOLONG, value);
    add_python_dir(cfg, strdup(inside), equals + 1);
}

static void parse_arguments(struct cw_config *cfg, int argc, char **argv) {
    *cfg = (struct cw_config){.memory_mb = 512, .cpu_seconds = 30, .max_fds = 100, .max_processes = 64,
                              .max_file_bytes = 64 << 20, .workspace_mb = 64, .max_frame_bytes = 16 << 20,
                              .python_home = "/usr", .share_fd = -1};
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc) cw_fail("arguments", EINVAL, flag);
        char *value = argv[++i];
        if (!strcmp(flag, "--memory-mb")) cfg->memory_mb = parse_number(flag, value, 64, 1 << 20);
        else if (!strcmp(flag, "--cpu-seconds")) cfg->cpu_seconds = parse_number(flag, value, 1, 1 << 24);
        else if (!strcmp(flag, "--max-fds")) cfg->max_fds = parse_number(flag, value, 8, 1 << 20);
        else if (!strcmp(flag, "--max-processes")) cfg->max_processes = parse_number(flag, value, 1, 1 << 16);
        else if (!strcmp(flag, "--max-file-bytes")) cfg->max_file_bytes = parse_number(flag, value, 1, 1UL << 40);
        else if (!strcmp(flag, "--cpus")) cfg->cpus = value;
        else if (!strcmp(flag, "--workspace-mb")) cfg->workspace_mb = parse_number(flag, value, 1, 1 << 20);
        else if (!strcmp(flag, "--max-frame-bytes")) cfg->max_frame_bytes = parse_number(flag, value, 8 << 20, 1 << 30);
        else if (!strcmp(flag, "--network")) cfg->host_network = !strcmp(value, "host");
        else if (!strcmp(flag, "--output-dir")) cfg->output_dir = value;
        else if (!strcmp(flag, "--output-max-bytes")) cfg->output_max_bytes = parse_number(flag, value, 0, 1UL << 40);
        else if (!strcmp(flag, "--python-subprocess")) cfg->python_subprocess = !strcmp(value, "yes");
        else if (!strcmp(flag, "--worker-path")) cfg->worker_path = value;
        else if (!strcmp(flag, "--python-home")) cfg->python_home = value;
        else if (!strcmp(flag, "--env")) append(&cfg->env, &cfg->n_env, value);
        else if (!strcmp(flag, "--readonly")) append(&cfg->readonly_paths, &cfg->n_readonly, value);
        else if (!strcmp(flag, "--script-file")) append(&cfg->script_files, &cfg->n_script_files, value);
        else if (!strcmp(flag, "--mount")) append(&cfg->mounts, &cfg->n_mounts, value);
        else if (!strcmp(flag, "--python-path")) add_python_dir(cfg, value, value);
        else if (!strcmp(flag, "--environment")) add_environment(cfg, value);
        else if (!strcmp(flag, "--library")) append(&cfg->libraries, &cfg->n_libraries, value);
        else cw_fail("arguments", EINVAL, flag);
    }
    if (!cfg->worker_path) cw_fail("arguments", EINVAL, "--worker-path is required");
    char stdlib[4096];
    snprintf(stdlib, sizeof stdlib, "%s/lib/python%d.%d", cfg->python_home, PY_MAJOR_VERSION, PY_MINOR_VERSION);
    cfg->stdlib_path = strdup(stdlib);
}

// A stage that fails in the launcher after the clone must not leave the sandbox or its cgroup.
static struct cw_cgroup *failing_cgroup;
static pid_t failing_child;

static void clean_up_after_failure(void) {
    if (failing_child > 0) {
        kill(failing_child, SIGKILL);
        waitpid(failing_child, NULL, 0);
    }
    if (failing_cgroup) cw_cgroup_remove(failing_cgroup);
}

// Whether `id` is mapped in this process's user namespace (a root supervisor in a rootless
// container sees only a range, often 0..65535).
static bool id_is_mapped(const char *map_file, unsigned id) {
    FILE *map = fopen(map_file, "re");
    if (!map) return false;
    unsigned inside, outside, count;
    bool mapped = false;
    while (!mapped && fscanf(map, "%u %u %u", &inside, &outside, &count) == 3)
        mapped = id >= inside && id - inside < count;
    fclose(map);
    return mapped;
}

static bool id_usable(unsigned id) {
    return id_is_mapped("/proc/self/uid_map", id) && id_is_mapped("/proc/self/gid_map", id);
}

static int exit_code_of(int status) {
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int main(int argc, char **argv) {
    // Every exit is _exit: a coverage build's profile runtime would otherwise write a
    // default.profraw into the caller's working directory.
    if (argc >= 1 && cw_started_as_python(argv[0])) cw_python_command(argc, argv); // inside, see python.c
    if (argc == 2 && !strcmp(argv[1], "--probe")) {
        int status = cw_probe();
        fflush(stdout);
        _exit(status);
    }
    if (argc == 3 && !strcmp(argv[1], "--needed-libraries")) { // for `capsule env create`
        int status = cw_print_needed_libraries(argv[2]);
        fflush(stdout);
        _exit(status);
    }
    if (argc == 2 && !strcmp(argv[1], "--python-version")) { // the embedded libpython's, for `capsule env create`
        printf("%d.%d\n", PY_MAJOR_VERSION, PY_MINOR_VERSION);
        fflush(stdout);
        _exit(0);
    }
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fprintf(stderr, "capsule-worker is started by capsule; it is not a command to run by hand.\n"
                        "To see which sandbox features this host has: " PROBE_USAGE "\n");
        return 2;
    }
    static struct cw_config cfg;
    bool print_root = argc >= 2 && !strcmp(argv[1], "--print-root"); // what the new root would hold
    parse_arguments(&cfg, argc - print_root, argv + print_root);
    if (print_root) {
        cw_collect_runtime(&cfg);
        for (size_t i = 0; i < cfg.n_entries; i++)
            printf("%s %s %s\n", cfg.entries[i].kind == CW_SYMLINK ? "symlink" : "bind",
                   cfg.entries[i].path, cfg.entries[i].source);
        fflush(stdout);
        _exit(0);
    }
    syscall(SYS_close_range, CW_STATUS_FD + 1, ~0U, 0); // nothing else of the supervisor's leaks in
    cw_collect_runtime(&cfg);

    if (geteuid() == 0) {
        cfg.host_uid = cfg.host_gid = SESSION_UID_BASE + (unsigned)getpid();
        if (!id_usable(cfg.host_uid)) {
            if (!id_usable(NOBODY_ID))
                cw_fail("user-namespace", EINVAL, "neither a per-session id nor 65534 is mapped in this user namespace");
            cfg.host_uid = cfg.host_gid = NOBODY_ID;
            cw_status("note this user namespace does not map capsule's per-session ids; sandboxes share the unprivileged id 65534");
        }
        // The sandbox inherits no supplementary groups, unless this user namespace forbids
        // setgroups (setgroups "deny"): then, as for an unprivileged caller, they stay.
        if (setgroups(0, NULL) < 0) {
            if (errno != EPERM) cw_fail("drop-groups", errno, "setgroups(0, NULL)");
            if (cfg.n_readonly > 0 && getgroups(0, NULL) > 0)
                cw_status("note the sandbox keeps the supplementary groups for reading readonly_paths (setgroups is denied here)");
        }
    } else {
        cfg.host_uid = geteuid();
        cfg.host_gid = getegid();
        // Only root may drop them: the sandbox keeps them for permission checks on its binds.
        if (cfg.n_readonly > 0 && getgroups(0, NULL) > 0)
            cw_status("note the sandbox keeps your supplementary groups for reading readonly_paths (only root can drop them)");
    }

    cw_prepare_writable_mounts(&cfg); // idmapped while this process is still privileged on the host

    cw_set_cpus(&cfg);
    static struct cw_cgroup cgroup;
    char why[512];
    if (!cw_cgroup_create(&cgroup, &cfg, why, sizeof why))
        cw_status("note no cgroup for this session: %s; %s", why,
                  cgroup.memory_limited ? "max_processes holds through RLIMIT_NPROC only"
                                        : "memory_mb then limits each process's address space (RLIMIT_AS: thread stacks and "
                                          "mappings count, not only memory in use), and max_processes holds through RLIMIT_NPROC only");
    cfg.memory_cgroup = cgroup.memory_limited;
    failing_cgroup = &cgroup;
    cw_on_fail(clean_up_after_failure);

    sigset_t signals;
    sigemptyset(&signals);
    for (size_t i = 0; i < CW_N_HANDLED_SIGNALS; i++) sigaddset(&signals, cw_handled_signals[i]);
    sigprocmask(SIG_BLOCK, &signals, NULL);

    signal(SIGPIPE, SIG_IGN); // a supervisor that stopped reading must not kill the cleanup
    int go[2], life[2], share[2] = {-1, -1};
    CW_TRY("pipe", pipe2(go, O_CLOEXEC));
    if (cfg.output_dir) CW_TRY("output-dir", socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, share));
    // The launcher holds the lifeline's write end until it exits: the sandbox can tell it is gone.
    CW_TRY("pipe", pipe2(life, O_CLOEXEC));
    // The cgroup namespace is rooted at the launcher's cgroup: the session's group shows as
    // /capsule/s<launcher pid>, which names nothing the uid map does not already show.
    unsigned long flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                          CLONE_NEWCGROUP | SIGCHLD;
    if (!cfg.host_network) flags |= CLONE_NEWNET;
    pid_t child = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
    if (child < 0) {
        cw_cgroup_remove(&cgroup);
        cw_fail("clone-namespaces", errno, "clone(CLONE_NEWUSER|CLONE_NEWPID|...)");
    }
    failing_child = child;
    if (child == 0) {
        close(go[1]);
        close(life[1]);
        prctl(PR_SET_PDEATHSIG, SIGKILL); // the sandbox never outlives its launcher (set again in sandbox.c)
        cfg.lifeline_fd = fcntl(life[0], F_DUPFD_CLOEXEC, 64); // clear of the fds 3-5 the sandbox arranges
        close(life[0]);
        if (share[1] >= 0) {
            close(share[0]);
            cfg.share_fd = fcntl(share[1], F_DUPFD_CLOEXEC, 64);
            close(share[1]);
        }
        cw_sandbox_main(&cfg, go[0]);
    }
    close(go[0]);
    close(life[0]);
    close(CW_CHANNEL_FD); // only the sandbox holds the channel, so its death is EOF for the supervisor
    cw_write_id_maps(child, cfg.host_uid, cfg.host_gid);
    // A write that fails means the child already died of a stage error it reported itself: go on
    // to reap it rather than report a second, misleading failure.
    if (write(go[1], "m", 1) == 1) {
        cw_cgroup_join(&cgroup, child); // while the child builds its root; it waits before running code
        if (write(go[1], "c", 1) != 1 && errno != EPIPE) cw_fail("release-sandbox", errno, "write");
    } else if (errno != EPIPE) {
        cw_fail("release-sandbox", errno, "write");
    }
    close(go[1]);
    int workspace = -1;
    if (share[0] >= 0) {
        close(share[1]); // so that a sandbox that failed before sending reads as end of file
        workspace = cw_receive_workspace(share[0]);
        close(share[0]);
    }

    int status = 0;
    struct rusage usage = {0}; // pid 1's, with every process of the namespace it reaped
    const pid_t supervisor = getppid();
    const struct timespec tick = {0, 250 * 1000000};
    for (;;) {
        siginfo_t info;
        int sig = sigtimedwait(&signals, &info, &tick);
        if (sig < 0 && getppid() != supervisor) {
            kill(child, SIGKILL); // the supervisor died: nobody enforces the timeout any more
        } else if (sig == SIGINT) {
            kill(child, SIGINT); // pid 1 forwards it to Python: KeyboardInterrupt
        } else if (sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) {
            kill(child, SIGKILL);
        } else if (sig == SIGCHLD) {
            pid_t done = wait4(child, &status, WNOHANG, &usage);
            if (done == child) break;
        }
    }
    if (cfg.output_dir) cw_copy_outputs(workspace, &cfg); // every process of the sandbox is gone
    long long cpu_us = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000LL + usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    cw_status("usage %lld %ld %lld", cpu_us, usage.ru_maxrss, cw_cgroup_peak_bytes(&cgroup));
    long ooms = cw_cgroup_oom_kills(&cgroup);
    if (ooms > 0) cw_status("oom %ld", ooms);
    cw_cgroup_remove(&cgroup);
    _exit(exit_code_of(status));
}
