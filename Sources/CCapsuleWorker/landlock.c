// Landlock, where the kernel has it: reads anywhere in the (already minimal) root, writes only
// under /workspace, /tmp, /dev/shm, the device nodes and :rw mounts, execution of Python itself only (and
// only with python_subprocess); no TCP unless the policy grants the host
// network (ABI 4); no signals or abstract unix sockets leaving the sandbox (ABI 6).
// Constants are spelled out because Debian 12's headers stop at ABI 3.
#include "worker.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif

#define LL_FS_EXECUTE (1ULL << 0)
#define LL_FS_WRITE_FILE (1ULL << 1)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_FS_READ_DIR (1ULL << 3)
#define LL_FS_REMOVE_DIR (1ULL << 4)
#define LL_FS_REMOVE_FILE (1ULL << 5)
#define LL_FS_MAKE_CHAR (1ULL << 6)
#define LL_FS_MAKE_DIR (1ULL << 7)
#define LL_FS_MAKE_REG (1ULL << 8)
#define LL_FS_MAKE_SOCK (1ULL << 9)
#define LL_FS_MAKE_FIFO (1ULL << 10)
#define LL_FS_MAKE_BLOCK (1ULL << 11)
#define LL_FS_MAKE_SYM (1ULL << 12)
#define LL_FS_REFER (1ULL << 13)       // ABI 2
#define LL_FS_TRUNCATE (1ULL << 14)    // ABI 3
#define LL_FS_IOCTL_DEV (1ULL << 15)   // ABI 5
#define LL_NET_BIND_TCP (1ULL << 0)    // ABI 4
#define LL_NET_CONNECT_TCP (1ULL << 1) // ABI 4
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0) // ABI 6
#define LL_SCOPE_SIGNAL (1ULL << 1)        // ABI 6

struct ll_ruleset_attr { uint64_t handled_access_fs, handled_access_net, scoped; };
struct ll_path_beneath { uint64_t allowed_access; int32_t parent_fd; } __attribute__((packed));

int cw_landlock_abi(void) {
    long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? 0 : (int)abi;
}

static void allow_beneath(int ruleset, const char *path, uint64_t access) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return; // e.g. /proc when it could not be mounted
    struct ll_path_beneath rule = {access, fd};
    if (syscall(__NR_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) < 0)
        cw_fail("landlock", errno, path);
    close(fd);
}

void cw_apply_landlock(const struct cw_config *cfg) {
    int abi = cw_landlock_abi();
    if (abi <= 0) {
        // Landlock is what keeps execve to Python itself: without it, every executable file of the root would run.
        if (cfg->python_subprocess)
            cw_fail("python-subprocess", ENOTSUP, "[sandbox] python_subprocess needs Landlock, which this kernel does not have");
        cw_status("note Landlock is not available on this kernel; mounts and seccomp still confine files");
        return;
    }
    uint64_t fs = (LL_FS_REFER << 1) - 1; // ABI 1 and 2 rights
    if (abi >= 3) fs |= LL_FS_TRUNCATE;
    if (abi >= 5) fs |= LL_FS_IOCTL_DEV;
    if (abi < 2) fs &= ~LL_FS_REFER;
    struct ll_ruleset_attr attr = {.handled_access_fs = fs};
    size_t attr_size = sizeof(uint64_t);
    if (abi >= 4) {
        attr.handled_access_net = cfg->host_network ? 0 : (LL_NET_BIND_TCP | LL_NET_CONNECT_TCP);
        attr_size = 2 * sizeof(uint64_t);
    }
    if (abi >= 6) {
        attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
        attr_size = sizeof attr;
    }
    int ruleset = (int)syscall(__NR_landlock_create_ruleset, &attr, attr_size, 0);
    if (ruleset < 0) cw_fail("landlock", errno, "landlock_create_ruleset");

    const uint64_t read = LL_FS_READ_FILE | LL_FS_READ_DIR;
    const uint64_t write = fs & ~(LL_FS_EXECUTE | LL_FS_MAKE_CHAR | LL_FS_MAKE_BLOCK | LL_FS_IOCTL_DEV);
    allow_beneath(ruleset, "/", read);
    allow_beneath(ruleset, "/workspace", write);
    allow_beneath(ruleset, "/tmp", write);
    allow_beneath(ruleset, "/dev/shm", write);
    // A :rw mount takes files and directories, but no symbolic link, socket or FIFO, which left in
    // a host tree would point the host's own tools elsewhere or at a listener inside.
    for (size_t i = 0; i < cfg->n_entries; i++) {
        const struct cw_entry *e = &cfg->entries[i];
        if (!e->writable) continue;
        uint64_t file = LL_FS_READ_FILE | LL_FS_WRITE_FILE | (abi >= 3 ? LL_FS_TRUNCATE : 0);
        allow_beneath(ruleset, e->path, e->kind == CW_BIND_DIR ? write & ~(LL_FS_MAKE_SOCK | LL_FS_MAKE_FIFO | LL_FS_MAKE_SYM) : file);
    }
    // Executing: nothing, or where the policy lets Python start again, that one file and the
    // dynamic loader execve opens for it (an ELF's interpreter needs the execute right too).
    if (cfg->python_subprocess) {
        allow_beneath(ruleset, cfg->python_executable, LL_FS_EXECUTE | LL_FS_READ_FILE);
        allow_beneath(ruleset, cfg->loader, LL_FS_EXECUTE | LL_FS_READ_FILE);
    }
    for (size_t i = 0; i < CW_N_DEVICES; i++)
        allow_beneath(ruleset, cw_device_nodes[i], LL_FS_READ_FILE | LL_FS_WRITE_FILE | (abi >= 3 ? LL_FS_TRUNCATE : 0));
    if (syscall(__NR_landlock_restrict_self, ruleset, 0) < 0) cw_fail("landlock", errno, "landlock_restrict_self");
    close(ruleset);
}
