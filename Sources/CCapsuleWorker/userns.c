// Id maps for the sandbox's user namespace, written by the launcher (still on the host) while
// the child waits on a pipe. Inside-root is never host-root: uid/gid 0 inside maps to host_uid.
// And the one-id namespaces a :rw mount is idmapped through.
#include "worker.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void write_proc_file(pid_t child, const char *name, const char *text) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)child, name);
    if (cw_write_text(path, 0, text) < 0) cw_fail("user-namespace", errno, path);
}

// One uid and one gid: `uid` inside is `host_uid` outside, and so for the gids.
static void write_maps(pid_t child, uid_t uid, uid_t host_uid, gid_t gid, gid_t host_gid) {
    char line[64];
    snprintf(line, sizeof line, "%u %u 1\n", (unsigned)uid, (unsigned)host_uid);
    write_proc_file(child, "uid_map", line);
    snprintf(line, sizeof line, "%u %u 1\n", (unsigned)gid, (unsigned)host_gid);
    write_proc_file(child, "gid_map", line);
}

void cw_write_id_maps(pid_t child, uid_t host_uid, gid_t host_gid) {
    write_proc_file(child, "setgroups", "deny"); // the sandbox can never call setgroups()
    write_maps(child, 0, host_uid, 0, host_gid);
}

// A user namespace nothing runs in, for an idmapped mount (mounts.c): a child makes it and waits
// there until the launcher holds its descriptor, then exits.
int cw_id_namespace(uid_t uid, uid_t host_uid, gid_t gid, gid_t host_gid) {
    int hold[2];
    CW_TRY("mount-rw", pipe2(hold, O_CLOEXEC));
    pid_t child = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);
    if (child < 0) cw_fail("mount-rw", errno, "clone(CLONE_NEWUSER)");
    if (child == 0) {
        char byte;
        close(hold[1]);
        (void)!read(hold[0], &byte, 1); // end of file: the launcher has the namespace, or failed
        _exit(0);
    }
    close(hold[0]);
    write_maps(child, uid, host_uid, gid, host_gid);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)child);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int err = errno;
    close(hold[1]);
    waitpid(child, NULL, 0);
    if (fd < 0) cw_fail("mount-rw", err, path);
    return fd;
}
