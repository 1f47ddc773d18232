// --output-dir: what the code leaves in /workspace/out is copied to a host directory once the
// sandbox has ended. pid 1 hands the launcher a descriptor of the workspace (SCM_RIGHTS) right
// after building the root; the launcher copies from it after pid 1 is reaped, when every process
// of the namespace is gone and nothing can change the tree under it. Only directories and regular
// files are copied, each name opened alone relative to its parent (O_NOFOLLOW, never a path), so
// a symbolic link, a socket, a FIFO or a device is reported and left out; a size cap (the bytes
// actually copied, so sparse files and hard links count in full), a depth and an entry count
// bound the work. The launcher writes with the supervisor's own credentials.
#include "worker.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 32
#define MAX_ENTRIES 10000
#define MAX_NOTED 20 // refusals reported one by one; the rest are counted

void cw_share_workspace(const struct cw_config *cfg) {
    if (cfg->share_fd < 0) return;
    CW_TRY("output-dir", mkdir("/workspace/out", 0755));
    int workspace = open("/workspace", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (workspace < 0) cw_fail("output-dir", errno, "/workspace");
    char byte = 'w';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { struct cmsghdr header; char space[CMSG_SPACE(sizeof(int))]; } control = {0};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &workspace, sizeof(int));
    if (sendmsg(cfg->share_fd, &message, 0) != 1) cw_fail("output-dir", errno, "sendmsg");
    close(workspace);
    close(cfg->share_fd);
}

int cw_receive_workspace(int socket) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { struct cmsghdr header; char space[CMSG_SPACE(sizeof(int))]; } control;
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
    ssize_t n;
    do n = recvmsg(socket, &message, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
    struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&message) : NULL;
    if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int))) return -1; // the sandbox failed first
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

struct copy {
    unsigned long long budget, bytes;
    unsigned long files, entries, refused;
};

// One status line per refusal: the code chose the name, so no byte of it may end the line.
static void refuse(struct copy *copy, const char *path, const char *why) {
    if (copy->refused++ >= MAX_NOTED) return;
    char shown[512];
    size_t i = 0;
    for (; path[i] && i < sizeof shown - 1; i++) shown[i] = (unsigned char)path[i] < 0x20 || path[i] == 0x7f ? '?' : path[i];
    shown[i] = 0;
    cw_status("output-refused %s: %s", shown, why);
}

static bool copy_file(struct copy *copy, int from, int to, const char *path, mode_t mode) {
    struct stat st;
    if (fstat(from, &st) < 0) return refuse(copy, path, strerror(errno)), false;
    if ((unsigned long long)st.st_size > copy->budget - copy->bytes) return refuse(copy, path, "over the size cap"), false;
    int out = openat(to, strrchr(path, '/') + 1, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, (mode & 0111) ? 0755 : 0644);
    if (out < 0) return refuse(copy, path, errno == ELOOP ? "the destination is a symbolic link" : strerror(errno)), false;
    char buffer[1 << 16];
    ssize_t n;
    bool whole = true;
    while ((n = read(from, buffer, sizeof buffer)) > 0) {
        if ((unsigned long long)n > copy->budget - copy->bytes) { whole = false; refuse(copy, path, "over the size cap"); break; }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buffer + done, (size_t)(n - done));
            if (w < 0) { close(out); return refuse(copy, path, strerror(errno)), false; }
            done += w;
        }
        copy->bytes += (unsigned long long)n;
    }
    close(out);
    if (n < 0) { whole = false; refuse(copy, path, strerror(errno)); }
    if (!whole) unlinkat(to, strrchr(path, '/') + 1, 0); // no half a file
    else copy->files++;
    return whole;
}

// Copies the entries of `from` into `to`; `path` names `from` as the code saw it.
static void copy_tree(struct copy *copy, int from, int to, const char *path, int depth) {
    DIR *dir = fdopendir(from);
    if (!dir) { close(from); refuse(copy, path, strerror(errno)); return; }
    struct dirent *d;
    while ((d = readdir(dir))) {
        if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")) continue;
        char child[4096];
        if (snprintf(child, sizeof child, "%s/%s", path, d->d_name) >= (int)sizeof child) { refuse(copy, path, "a name too long"); continue; }
        if (++copy->entries > MAX_ENTRIES) { refuse(copy, child, "more than 10000 entries"); break; }
        struct stat st;
        if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) { refuse(copy, child, strerror(errno)); continue; }
        if (S_ISLNK(st.st_mode)) { refuse(copy, child, "a symbolic link"); continue; }
        if (S_ISREG(st.st_mode)) {
            int in = openat(dirfd(dir), d->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            if (in < 0) { refuse(copy, child, strerror(errno)); continue; }
            copy_file(copy, in, to, child, st.st_mode);
            close(in);
        } else if (S_ISDIR(st.st_mode)) {
            if (depth >= MAX_DEPTH) { refuse(copy, child, "nested more than 32 directories deep"); continue; }
            if (mkdirat(to, d->d_name, 0755) < 0 && errno != EEXIST) { refuse(copy, child, strerror(errno)); continue; }
            int out = openat(to, d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (out < 0) { refuse(copy, child, errno == ELOOP || errno == ENOTDIR ? "the destination is not a directory" : strerror(errno)); continue; }
            int in = openat(dirfd(dir), d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (in < 0) refuse(copy, child, strerror(errno));
            else copy_tree(copy, in, out, child, depth + 1);
            close(out);
        } else {
            refuse(copy, child, S_ISSOCK(st.st_mode) ? "a socket" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device");
        }
    }
    closedir(dir);
}

void cw_copy_outputs(int workspace, const struct cw_config *cfg) {
    int out = open(cfg->output_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int from = workspace < 0 ? -1 : openat(workspace, "out", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (out < 0 || from < 0) {
        cw_status("output-failed %s", out < 0 ? cfg->output_dir : "/workspace/out is gone or not a directory");
        if (out >= 0) close(out);
        if (from >= 0) close(from);
        return;
    }
    struct copy copy = {.budget = cfg->output_max_bytes};
    copy_tree(&copy, from, out, "/workspace/out", 0);
    close(out);
    cw_status("output %lu %llu %lu", copy.files, copy.bytes, copy.refused);
}
