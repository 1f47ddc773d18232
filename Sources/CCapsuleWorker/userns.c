// Id maps for the sandbox's user namespace, written by the launcher (still on the host) while
// the child waits on a pipe. Inside-root is never host-root: uid/gid 0 inside maps to host_uid.
#include "worker.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void write_proc_file(pid_t child, const char *name, const char *text) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)child, name);
    if (cw_write_text(path, 0, text) < 0) cw_fail("user-namespace", errno, path);
}

void cw_write_id_maps(pid_t child, uid_t host_uid, gid_t host_gid) {
    char line[64];
    write_proc_file(child, "setgroups", "deny"); // the sandbox can never call setgroups()
    snprintf(line, sizeof line, "0 %u 1\n", (unsigned)host_uid);
    write_proc_file(child, "uid_map", line);
    snprintf(line, sizeof line, "0 %u 1\n", (unsigned)host_gid);
    write_proc_file(child, "gid_map", line);
}
