// Resource limits. They hold per process even where no cgroup could be made; the cgroup (when
// present) caps the whole session. A soft limit below the hard one leaves room to report.
// memory_mb is memory in use, which the session's memory cgroup counts. The address-space limit is
// then only a backstop, several times larger, so that reserved but untouched address space (thread
// stacks, malloc arenas, mapped files) never stands in for memory, yet an allocation no session
// could hold fails at once with MemoryError. Without a memory cgroup it is memory_mb itself.
#include "worker.h"
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>

#define THREAD_STACK (8UL << 20) // RLIMIT_STACK, and so glibc's default thread stack

static void set_limit(int resource, rlim_t soft, rlim_t hard, const char *name) {
    struct rlimit rl = {soft, hard};
    if (setrlimit(resource, &rl) < 0) cw_fail("rlimit", errno, name);
}

// 4 x memory_mb, plus a default thread stack (RLIMIT_STACK below) for every task max_processes
// allows, so that many threads always start.
static rlim_t address_space_backstop(const struct cw_config *cfg) {
    return ((rlim_t)cfg->memory_mb * 4 << 20) + (rlim_t)cfg->max_processes * THREAD_STACK;
}

void cw_set_rlimits(const struct cw_config *cfg) {
    rlim_t memory = (rlim_t)cfg->memory_mb << 20;
    rlim_t address_space = cfg->memory_cgroup ? address_space_backstop(cfg) : memory;
    set_limit(RLIMIT_AS, address_space, address_space, "RLIMIT_AS");
    // SIGXCPU at the soft limit, SIGKILL one second later.
    set_limit(RLIMIT_CPU, cfg->cpu_seconds, cfg->cpu_seconds + 1, "RLIMIT_CPU");
    set_limit(RLIMIT_NOFILE, cfg->max_fds, cfg->max_fds, "RLIMIT_NOFILE");
    set_limit(RLIMIT_NPROC, cfg->max_processes + 1, cfg->max_processes + 1, "RLIMIT_NPROC");
    set_limit(RLIMIT_FSIZE, (rlim_t)cfg->max_file_bytes, (rlim_t)cfg->max_file_bytes, "RLIMIT_FSIZE");
    set_limit(RLIMIT_CORE, 0, 0, "RLIMIT_CORE");
    set_limit(RLIMIT_MEMLOCK, 0, 0, "RLIMIT_MEMLOCK");
    set_limit(RLIMIT_MSGQUEUE, 0, 0, "RLIMIT_MSGQUEUE");
    set_limit(RLIMIT_STACK, THREAD_STACK, THREAD_STACK, "RLIMIT_STACK");
}

// The cores the code may run on. Set in the launcher before the clone, so the whole sandbox
// inherits it; seccomp then refuses sched_setaffinity, so the code cannot widen it.
void cw_set_cpus(const struct cw_config *cfg) {
    if (!cfg->cpus) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (const char *p = cfg->cpus; *p;) {
        char *end;
        long core = strtol(p, &end, 10);
        if (end == p || core < 0 || core >= CPU_SETSIZE) cw_fail("cpus", EINVAL, cfg->cpus);
        CPU_SET((int)core, &set);
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') cw_fail("cpus", EINVAL, cfg->cpus);
    }
    if (sched_setaffinity(0, sizeof set, &set) < 0) cw_fail("cpus", errno, cfg->cpus);
}
