// A cgroup per session for memory and pids, beneath the launcher's own cgroup (so whatever limits
// the host puts on the supervisor also hold for its sandboxes), where the host lets us create one
// (root, or a delegated subtree). cgroup v1 controllers are used when mounted, else v2.
// Session groups are <own group>/capsule/s<launcher pid>; stale ones from killed launchers are
// removed here.
#include "worker.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define V1_MEMORY "/sys/fs/cgroup/memory"
#define V1_PIDS "/sys/fs/cgroup/pids"
#define V2_ROOT "/sys/fs/cgroup"

static int write_file(const char *dir, const char *name, const char *text) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return cw_write_text(path, 0, text);
}

static void remove_stale(const char *parent) {
    DIR *dir = opendir(parent);
    if (!dir) return;
    struct dirent *d;
    while ((d = readdir(dir))) {
        if (d->d_name[0] != 's') continue;
        long pid = strtol(d->d_name + 1, NULL, 10);
        if (pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", parent, d->d_name);
        rmdir(path);
    }
    closedir(dir);
}

// This process's group in the hierarchy of `controller` ("memory", "pids", or "" for v2), as a
// path under that hierarchy's mount: /proc/self/cgroup has lines "id:controllers:/path".
static bool own_group(const char *controller, const char *mount, char *out, size_t len) {
    FILE *file = fopen("/proc/self/cgroup", "re");
    if (!file) return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, file)) {
        char *controllers = strchr(line, ':');
        char *path = controllers ? strchr(controllers + 1, ':') : NULL;
        if (!path) continue;
        *path++ = 0;
        path[strcspn(path, "\n")] = 0;
        controllers++;
        if (controller[0] == 0) found = controllers[0] == 0;
        else for (char *name = strtok(controllers, ","); name && !found; name = strtok(NULL, ","))
            found = strcmp(name, controller) == 0;
        if (found) snprintf(out, len, "%s%s", mount, strcmp(path, "/") == 0 ? "" : path);
    }
    fclose(file);
    return found;
}

static bool make_group(char *out, size_t len, const char *controller, const char *mount, char *why, size_t why_len) {
    char own[512], parent[600];
    if (!own_group(controller, mount, own, sizeof own)) {
        snprintf(why, why_len, "this process is in no %s cgroup", controller[0] ? controller : "v2");
        return false;
    }
    snprintf(parent, sizeof parent, "%s/capsule", own);
    if (mkdir(parent, 0755) < 0 && errno != EEXIST) {
        snprintf(why, why_len, "cannot create %s (%s)", parent, strerror(errno));
        return false;
    }
    remove_stale(parent);
    snprintf(out, len, "%s/s%d", parent, (int)getpid());
    if (mkdir(out, 0755) < 0 && errno != EEXIST) {
        snprintf(why, why_len, "cannot create %s (%s)", out, strerror(errno));
        out[0] = 0;
        return false;
    }
    return true;
}

bool cw_cgroup_create(struct cw_cgroup *cg, const struct cw_config *cfg, char *why, size_t why_len) {
    memset(cg, 0, sizeof *cg);
    char memory[32], pids[32];
    snprintf(memory, sizeof memory, "%lu", cfg->memory_mb << 20);
    snprintf(pids, sizeof pids, "%lu", cfg->max_processes + 1); // + the sandbox's own pid 1

    if (access(V1_MEMORY "/memory.limit_in_bytes", F_OK) == 0) {
        if (!make_group(cg->memory, sizeof cg->memory, "memory", V1_MEMORY, why, why_len)) return false;
        if (write_file(cg->memory, "memory.limit_in_bytes", memory) < 0) {
            snprintf(why, why_len, "cannot set memory.limit_in_bytes (%s)", strerror(errno));
            return false;
        }
        cg->memory_limited = true;
        // Memory plus swap at the same value: swapping out does not buy room. Without swap
        // accounting that file is absent, and swappiness 0 keeps the group's memory out of swap.
        if (write_file(cg->memory, "memory.memsw.limit_in_bytes", memory) < 0)
            write_file(cg->memory, "memory.swappiness", "0");
        if (access(V1_PIDS "/pids.max", F_OK) == 0 || access(V1_PIDS "/cgroup.procs", F_OK) == 0) {
            if (!make_group(cg->pids, sizeof cg->pids, "pids", V1_PIDS, why, why_len)) return false;
            if (write_file(cg->pids, "pids.max", pids) < 0) {
                snprintf(why, why_len, "cannot set pids.max (%s)", strerror(errno));
                return false;
            }
        }
        return true;
    }
    if (access(V2_ROOT "/cgroup.controllers", F_OK) == 0) {
        cg->v2 = true;
        if (!make_group(cg->memory, sizeof cg->memory, "", V2_ROOT, why, why_len)) return false;
        // v2 enables controllers top-down: our own group must delegate them to capsule/, which
        // fails while processes live in it (the "no internal processes" rule).
        char own[512], capsule[600];
        snprintf(capsule, sizeof capsule, "%s", cg->memory);
        *strrchr(capsule, '/') = 0;
        snprintf(own, sizeof own, "%s", capsule);
        *strrchr(own, '/') = 0;
        if (write_file(own, "cgroup.subtree_control", "+memory +pids") < 0 ||
            write_file(capsule, "cgroup.subtree_control", "+memory +pids") < 0) {
            snprintf(why, why_len, "cannot delegate the memory and pids controllers below %s (%s); run capsule in a delegated cgroup",
                     own, strerror(errno));
            rmdir(cg->memory);
            cg->memory[0] = 0;
            return false;
        }
        if (write_file(cg->memory, "memory.max", memory) < 0) {
            snprintf(why, why_len, "cannot set memory.max in %s (%s)", cg->memory, strerror(errno));
            return false;
        }
        cg->memory_limited = true;
        write_file(cg->memory, "memory.swap.max", "0");
        if (write_file(cg->memory, "pids.max", pids) < 0) {
            snprintf(why, why_len, "cannot set pids.max in %s (%s)", cg->memory, strerror(errno));
            return false;
        }
        return true;
    }
    snprintf(why, why_len, "no cgroup memory controller is mounted");
    return false;
}

void cw_cgroup_join(const struct cw_cgroup *cg, pid_t pid) {
    char text[32];
    snprintf(text, sizeof text, "%d", (int)pid);
    if (cg->memory[0] && write_file(cg->memory, "cgroup.procs", text) < 0) cw_fail("cgroup", errno, cg->memory);
    if (cg->pids[0] && write_file(cg->pids, "cgroup.procs", text) < 0) cw_fail("cgroup", errno, cg->pids);
}

// The text of the session's memory-cgroup file `name`, in `buf`; false without a memory cgroup
// or when the file cannot be read.
static bool read_memory_file(const struct cw_cgroup *cg, const char *name, char *buf, size_t size) {
    if (!cg->memory[0]) return false;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", cg->memory, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    return true;
}

// The most memory the session's processes held at once (page cache and tmpfs included), or -1.
long long cw_cgroup_peak_bytes(const struct cw_cgroup *cg) {
    char buf[64];
    return read_memory_file(cg, cg->v2 ? "memory.peak" : "memory.max_usage_in_bytes", buf, sizeof buf) ? strtoll(buf, NULL, 10) : -1;
}

long cw_cgroup_oom_kills(const struct cw_cgroup *cg) {
    char buf[1024];
    if (!read_memory_file(cg, cg->v2 ? "memory.events" : "memory.oom_control", buf, sizeof buf)) return 0;
    char *hit = strstr(buf, "oom_kill ");
    return hit ? strtol(hit + 9, NULL, 10) : 0;
}

void cw_cgroup_remove(const struct cw_cgroup *cg) {
    const char *dirs[2] = {cg->memory, cg->pids};
    for (int i = 0; i < 2; i++) {
        if (!dirs[i][0]) continue;
        // The last tasks of the namespace may still be exiting for a moment after pid 1 is reaped.
        for (int tries = 0; tries < 100 && rmdir(dirs[i]) < 0 && errno == EBUSY; tries++)
            nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}
