// The status pipe (fd 4 in the sandbox): one line per event, read by the supervisor.
//   stage <name> <errno> <detail>   a setup stage failed; the sandbox exits 125
//   note <text>                     something the user should know (e.g. no cgroup here)
//   exit <code> | signal <n>        how the code ended (written by pid 1)
//   cpu-limit                       it was killed at the hard CPU limit (written by pid 1)
//   oom <count>                     memory-limit kills seen by the cgroup (written by the launcher)
#include "worker.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *const cw_device_nodes[CW_N_DEVICES] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"};
const int cw_handled_signals[CW_N_HANDLED_SIGNALS] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD};

static int status_fd = CW_STATUS_FD;

static void write_all(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(status_fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        buf += n; len -= (size_t)n;
    }
}

void cw_status(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    write_all(line, (size_t)n);
}

static void (*fail_cleanup)(void);
static pid_t fail_cleanup_owner;

void cw_on_fail(void (*cleanup)(void)) {
    fail_cleanup = cleanup;
    fail_cleanup_owner = getpid(); // not inherited in effect: the sandbox's processes have other pids
}

_Noreturn void cw_fail(const char *stage, int err, const char *detail) {
    char clean[512];
    size_t i = 0;
    for (; detail && detail[i] && i < sizeof clean - 1; i++)
        clean[i] = (detail[i] == '\n') ? ' ' : detail[i];
    clean[i] = 0;
    cw_status("stage %s %d %s", stage, err, clean);
    if (fail_cleanup && getpid() == fail_cleanup_owner) fail_cleanup();
    _exit(CW_EXIT_SETUP);
}


int cw_open_no_symlinks(const char *path) {
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
}

int cw_write_text(const char *path, int flags, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC | flags, 0644);
    if (fd < 0) return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int err = n < 0 ? errno : EIO; // a short write of a few bytes means the file refused the rest
    close(fd);
    if (n == (ssize_t)len) return 0;
    errno = err;
    return -1;
}
