// capsule-worker: sandbox setup in C, then embedded CPython.
// Every function that can fail reports through cw_fail(stage, errno, detail), which writes one line
// to the status pipe and exits; the supervisor turns the line into a sentence for the user.
#pragma once
#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define CW_CHANNEL_FD 3   // the socket to the supervisor, inside the sandbox
#define CW_STATUS_FD 4    // the status pipe: stage errors and the final outcome
#define CW_GO_FD 5        // pid 1 only: the launcher's "in the cgroup" byte, closed before user code
#define CW_EXIT_SETUP 125 // exit status of a sandbox that failed before Python started
#define CW_MAX_ENTRIES 512

// One thing placed in the new root: a bind of a host path (read-only, but for a mount given as
// HOST:DEST:rw), or a symlink.
struct cw_entry {
    enum { CW_BIND_DIR, CW_BIND_FILE, CW_SYMLINK } kind;
    char *path;    // where it appears inside the sandbox
    char *source;  // host path (binds) or link target (symlinks)
    int fd;        // O_PATH fd to the source, opened while the host's paths can still be walked
    bool no_symlinks; // a path the policy named: opened with RESOLVE_NO_SYMLINKS, so it means itself
    bool writable;    // a HOST:DEST:rw mount (mounts.c: idmapped when the launcher is root)
    bool detached;    // fd is a mount tree the launcher made (open_tree), attached with move_mount
};

// The device nodes bound into /dev (mounts.c) and writable there (landlock.c).
extern const char *const cw_device_nodes[4];
#define CW_N_DEVICES 4

// The signals the launcher and pid 1 handle themselves (forwarding SIGINT, reaping on SIGCHLD).
extern const int cw_handled_signals[5];
#define CW_N_HANDLED_SIGNALS 5

struct cw_config {
    unsigned long memory_mb, cpu_seconds, max_fds, max_processes, max_file_bytes, workspace_mb, max_frame_bytes;
    const char *cpus;          // "0,2,3": the cores the code may run on, or NULL for all
    bool host_network;
    const char *output_dir;    // --output-dir: the host directory that receives /workspace/out (outputs.c)
    unsigned long long output_max_bytes;
    int share_fd;              // in the sandbox: the socket pid 1 sends the workspace's descriptor on, or -1
    bool python_subprocess;    // [sandbox] python_subprocess: Python itself may be started again (python.c)
    char python_executable[64]; // where this binary appears inside, as Python itself (python.c)
    char loader[4096];         // the dynamic loader this binary names (PT_INTERP), which execve opens too
    bool memory_cgroup;        // the session's memory cgroup holds memory_mb (else RLIMIT_AS must)
    const char *worker_path;   // host directory holding the capsule_worker package
    int lifeline_fd;           // in the sandbox: read end of a pipe only the launcher writes to (EOF once it is gone)
    const char *python_home;   // prefix of the embedded Python (Debian: /usr)
    char *stdlib_path;         // <home>/lib/python3.X
    char **env; size_t n_env;
    char **readonly_paths; size_t n_readonly;
    char **script_files; size_t n_script_files; // a script's own modules, bound as readonly_paths are
    char **mounts; size_t n_mounts; // HOST:DEST[:rw], a host path bound at DEST
    bool writable_mounts;      // some mount is :rw (seccomp then refuses set-user-ID and set-group-ID bits)
    // Directories on sys.path after the standard library, bound read-only: an environment's
    // packages (inside /opt/capsule/envs/NAME/site-packages) and the policy's python_path.
    struct cw_python_dir { char *inside; char *source; } *python_dirs; size_t n_python_dirs;
    char **libraries; size_t n_libraries; // sonames the environment's C extensions need, found in the host's library directories
    struct cw_entry entries[CW_MAX_ENTRIES]; size_t n_entries;
    uid_t host_uid; gid_t host_gid; // what uid/gid 0 inside maps to on the host
};

// report.c
_Noreturn void cw_fail(const char *stage, int err, const char *detail);
void cw_on_fail(void (*cleanup)(void)); // run (in the launcher) before cw_fail exits
int cw_open_no_symlinks(const char *path);  // O_PATH, refusing a symlink anywhere in the path
int cw_write_text(const char *path, int flags, const char *text); // whole text or -1 with errno
void cw_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define CW_TRY(stage, expr) do { if ((expr) < 0) cw_fail(stage, errno, #expr); } while (0)

// elfdeps.c: the shared libraries the embedded interpreter and its C modules need
void cw_collect_runtime(struct cw_config *cfg);
int cw_print_needed_libraries(const char *dir); // capsule-worker --needed-libraries DIR
struct cw_entry *cw_add_entry(struct cw_config *cfg, int kind, const char *path, const char *source); // NULL if present

// userns.c (launcher side)
void cw_write_id_maps(pid_t child, uid_t host_uid, gid_t host_gid);
int cw_id_namespace(uid_t uid, uid_t host_uid, gid_t gid, gid_t host_gid); // a descriptor of a user namespace mapping just these

// cgroup.c (launcher side)
struct cw_cgroup { char memory[640]; char pids[640]; bool v2; bool memory_limited; };
bool cw_cgroup_create(struct cw_cgroup *cg, const struct cw_config *cfg, char *why, size_t why_len);
void cw_cgroup_join(const struct cw_cgroup *cg, pid_t pid);
long cw_cgroup_oom_kills(const struct cw_cgroup *cg);
long long cw_cgroup_peak_bytes(const struct cw_cgroup *cg);
void cw_cgroup_remove(const struct cw_cgroup *cg);

// mounts.c
void cw_collect_host_files(struct cw_config *cfg); // the time-zone database; network files with the host network
void cw_prepare_writable_mounts(struct cw_config *cfg); // the launcher, before the clone
void cw_open_sources(struct cw_config *cfg);
void cw_build_root(const struct cw_config *cfg);

// limits.c, landlock.c, caps.c, seccomp.c
void cw_set_rlimits(const struct cw_config *cfg);
void cw_set_cpus(const struct cw_config *cfg);
void cw_apply_landlock(const struct cw_config *cfg);
void cw_drop_capabilities(void);
void cw_apply_seccomp(const struct cw_config *cfg);
int cw_landlock_abi(void);

// outputs.c
void cw_share_workspace(const struct cw_config *cfg); // pid 1: /workspace/out made, the workspace sent
int cw_receive_workspace(int socket);                 // the launcher: that descriptor, or -1
void cw_copy_outputs(int workspace, const struct cw_config *cfg);

// sandbox.c: the ordered stages, run by pid 1 of the new pid namespace
_Noreturn void cw_sandbox_main(struct cw_config *cfg, int go_fd);

// python.c
void *cw_python_start(const struct cw_config *cfg); // initialize and import capsule_worker.main
pid_t cw_python_fork(void);
_Noreturn void cw_python_serve(void *module, unsigned long max_frame_bytes);
// python_subprocess: this binary, bound at cfg->python_executable (/usr/bin/python3.X), runs as
// an ordinary interpreter when started by that name inside; CW_PYTHON_CONFIG tells it the home
// and the directories the session's own interpreter has on sys.path.
#define CW_PYTHON_CONFIG "/opt/capsule/python.conf"
void cw_add_python_command(struct cw_config *cfg);
void cw_python_command_config(const struct cw_config *cfg, char *text, size_t size);
bool cw_started_as_python(const char *argv0);
_Noreturn void cw_python_command(int argc, char **argv);
