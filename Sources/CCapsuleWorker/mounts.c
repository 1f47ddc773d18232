// The sandbox's root: a small tmpfs holding read-only binds of exactly what the embedded
// interpreter needs (and a few host data files ordinary code expects, see cw_collect_host_files),
// a writable /workspace and /tmp sharing one tmpfs, a minimal /dev and /proc of the new pid
// namespace. The host root is detached after pivot_root and the new root is made read-only.
#include "worker.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NEW_ROOT "/tmp" // any directory works as the mount point; /tmp exists everywhere
#define SCRATCH NEW_ROOT "/.scratch" // where the workspace tmpfs is mounted before its directories are bound

static int device_fds[CW_N_DEVICES];

// A HOST:DEST:rw mount, where the launcher is root: the sandbox's root is a per-session host uid,
// which owns nothing on the host, so a plain bind would let it write nowhere. The launcher (still
// privileged on the host) clones the tree and idmaps it: the ids its top directory's owner has on
// disk appear inside as the sandbox's root, and what the sandbox writes lands as that owner's;
// files of anyone else show as the overflow id, readable as their mode says, never writable. The
// tree is nosuid, nodev and noexec; the sandbox attaches it with move_mount (cw_build_root).
// Where the launcher is an ordinary user, the sandbox's root is that user and a bind suffices.
void cw_prepare_writable_mounts(struct cw_config *cfg) {
    if (!cfg->writable_mounts || cfg->host_uid == geteuid()) return;
    for (size_t i = 0; i < cfg->n_entries; i++) {
        struct cw_entry *e = &cfg->entries[i];
        if (!e->writable) continue;
        struct stat st;
        int source = cw_open_no_symlinks(e->source);
        if (source < 0 || fstat(source, &st) < 0) cw_fail("mount", errno, e->source);
        int tree = open_tree(source, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
        if (tree < 0) cw_fail("mount-rw", errno, e->source);
        close(source);
        struct mount_attr attr = {
            .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            .userns_fd = (unsigned long long)cw_id_namespace(st.st_uid, cfg->host_uid, st.st_gid, cfg->host_gid)};
        if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) cw_fail("mount-rw", errno, e->source);
        close((int)attr.userns_fd);
        e->fd = tree;
        e->detached = true;
    }
}

// Whether `path` lies in a directory already bound at its own host path (its contents are there).
static bool bound_within(const struct cw_config *cfg, const char *path) {
    for (size_t i = 0; i < cfg->n_entries; i++) {
        const struct cw_entry *e = &cfg->entries[i];
        size_t n = strlen(e->path);
        if (e->kind == CW_BIND_DIR && !strcmp(e->path, e->source) && !strncmp(path, e->path, n) && path[n] == '/')
            return true;
    }
    return false;
}

// A host path placed at the same path inside, if the host has it: a file or directory is bound;
// a symlink is recreated and what it points to is added too, so that links such as
// /usr/lib/ssl/cert.pem -> /etc/ssl/certs/ca-certificates.crt resolve inside.
static void add_host_path(struct cw_config *cfg, const char *path, int depth) {
    struct stat st;
    char target[PATH_MAX], real[PATH_MAX];
    if (depth > 8 || bound_within(cfg, path) || lstat(path, &st) < 0) return;
    if (!S_ISLNK(st.st_mode)) {
        if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) cw_add_entry(cfg, S_ISDIR(st.st_mode) ? CW_BIND_DIR : CW_BIND_FILE, path, path);
        return;
    }
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0 || !realpath(path, real)) return; // dangling on the host too
    target[n] = 0;
    cw_add_entry(cfg, CW_SYMLINK, path, target);
    add_host_path(cfg, real, depth + 1);
}

// Host data that ordinary code expects and that tells nothing about the host beyond what the
// runtime already does: the time-zone database always; with the host network, name resolution
// (hosts, resolv.conf, nsswitch.conf) and the CA certificates, where OpenSSL looks for them
// (<OPENSSLDIR>/cert.pem and certs; Debian's, Fedora's and Arch's directories).
void cw_collect_host_files(struct cw_config *cfg) {
    add_host_path(cfg, "/usr/share/zoneinfo", 0);
    if (!cfg->host_network) return;
    static const char *const network[] = {
        "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/ssl/certs", "/etc/ssl/certs/ca-certificates.crt",
        "/usr/share/ca-certificates", "/usr/local/share/ca-certificates", // where Debian's /etc/ssl/certs links point
        "/usr/lib/ssl/cert.pem", "/usr/lib/ssl/certs", "/etc/pki/tls/cert.pem", "/etc/pki/tls/certs",
        "/etc/ssl/cert.pem"};
    for (size_t i = 0; i < sizeof network / sizeof network[0]; i++) add_host_path(cfg, network[i], 0);
}

// Opened while this process still walks the host's directories with its original credentials,
// so a worker package under a private directory (say /root) can still be bound.
void cw_open_sources(struct cw_config *cfg) {
    for (size_t i = 0; i < cfg->n_entries; i++) {
        struct cw_entry *e = &cfg->entries[i];
        if (e->kind == CW_SYMLINK || e->detached) continue;
        e->fd = e->no_symlinks ? cw_open_no_symlinks(e->source) : open(e->source, O_PATH | O_CLOEXEC);
        if (e->fd < 0) cw_fail("bind-source", errno, e->source);
    }
    for (size_t i = 0; i < CW_N_DEVICES; i++) {
        device_fds[i] = open(cw_device_nodes[i], O_PATH | O_CLOEXEC);
        if (device_fds[i] < 0) cw_fail("bind-source", errno, cw_device_nodes[i]);
    }
}

static void make_parents(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + strlen(NEW_ROOT) + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) cw_fail("make-root", errno, buf);
        *p = '/';
    }
}

static void make_node(const char *path, bool dir) {
    make_parents(path);
    if (dir) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST) cw_fail("make-root", errno, path);
    } else {
        // A file a read-only bind already shows (python_subprocess's /usr/bin/python3.X under a
        // readonly_paths /usr/bin) is bound over as it is: creating it would meet the read-only mount.
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) return;
        int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) cw_fail("make-root", errno, path);
        close(fd);
    }
}

enum bind_mode { READ_ONLY, DEVICE, WRITABLE };

// Bind through /proc/self/fd/N, then remount (read-only but for a device or a :rw mount) keeping locked flags.
static void bind_path(int source_fd, const char *target, bool dir, enum bind_mode mode) {
    char source[64];
    snprintf(source, sizeof source, "/proc/self/fd/%d", source_fd);
    make_node(target, dir);
    if (mount(source, target, NULL, MS_BIND, NULL) < 0) cw_fail("bind-mount", errno, target);
    struct statvfs sv;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID |
                          (mode == READ_ONLY ? MS_RDONLY | MS_NODEV : mode == WRITABLE ? MS_NODEV | MS_NOEXEC : MS_NOEXEC);
    if (statvfs(target, &sv) == 0) {
        if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
        if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
        if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
        if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    }
    if (mount(NULL, target, NULL, flags, NULL) < 0) cw_fail("bind-remount", errno, target);
}

static void write_small_file(const char *path, const char *text) {
    make_parents(path);
    if (cw_write_text(path, O_CREAT | O_TRUNC, text) < 0) cw_fail("make-root", errno, path);
}

static void mount_tmpfs(const char *target, unsigned long mb, unsigned long extra_flags, const char *mode) {
    char options[128];
    snprintf(options, sizeof options, "size=%lum,nr_inodes=%lu,mode=%s", mb, mb * 256 + 64, mode);
    make_node(target, true);
    if (mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | extra_flags, options) < 0)
        cw_fail("mount-tmpfs", errno, target);
}

// /workspace and /tmp are two directories of one tmpfs, so together they hold at most
// workspace_mb. The tmpfs is mounted at a scratch point, its directories are bound into place,
// and the scratch point is detached and removed before the root becomes read-only.
// Where Python may be started again (python_subprocess), nothing written there can be executed:
// the tmpfs is noexec, as /dev/shm always is.
static void mount_scratch_space(unsigned long mb, bool noexec) {
    static const struct { const char *name; mode_t mode; } spaces[] = {{"/workspace", 0755}, {"/tmp", 01777}};
    char inner[64], target[64];
    mount_tmpfs(SCRATCH, mb, noexec ? MS_NOEXEC : 0, "0755");
    for (size_t i = 0; i < sizeof spaces / sizeof spaces[0]; i++) {
        snprintf(inner, sizeof inner, SCRATCH "%s", spaces[i].name);
        snprintf(target, sizeof target, NEW_ROOT "%s", spaces[i].name);
        if (mkdir(inner, 0700) < 0 || chmod(inner, spaces[i].mode) < 0) cw_fail("make-root", errno, inner);
        make_node(target, true);
        if (mount(inner, target, NULL, MS_BIND, NULL) < 0) cw_fail("bind-mount", errno, target);
    }
    CW_TRY("mount-tmpfs", umount2(SCRATCH, MNT_DETACH));
    CW_TRY("make-root", rmdir(SCRATCH));
}

void cw_build_root(const struct cw_config *cfg) {
    char path[4096];
    // Nothing we mount from here on propagates back to the host.
    CW_TRY("mount-private", mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
    CW_TRY("mount-root", mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=2m,nr_inodes=4096,mode=0755"));
    // First, so that a read-only path below /tmp (possible for a Policy built in code; policy files
    // refuse /tmp) is bound inside it rather than hidden beneath it.
    mount_scratch_space(cfg->workspace_mb, cfg->python_subprocess);

    for (size_t i = 0; i < cfg->n_entries; i++) {
        const struct cw_entry *e = &cfg->entries[i];
        snprintf(path, sizeof path, NEW_ROOT "%s", e->path);
        if (e->kind == CW_SYMLINK) {
            make_parents(path);
            // EROFS: the place lies in a read-only bind (a readonly_paths /usr/bin), whose own entries stand.
            if (symlink(e->source, path) < 0 && errno != EEXIST && errno != EROFS) cw_fail("make-root", errno, path);
        } else if (e->detached) {
            make_node(path, e->kind == CW_BIND_DIR);
            if (move_mount(e->fd, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) < 0) cw_fail("mount-rw", errno, e->path);
            close(e->fd);
        } else {
            bind_path(e->fd, path, e->kind == CW_BIND_DIR, e->writable ? WRITABLE : READ_ONLY);
            close(e->fd);
        }
    }

    for (size_t i = 0; i < CW_N_DEVICES; i++) {
        snprintf(path, sizeof path, NEW_ROOT "%s", cw_device_nodes[i]);
        bind_path(device_fds[i], path, false, DEVICE); // /dev/null must take writes
        close(device_fds[i]);
    }
    static const char *const dev_links[][2] = {
        {"/proc/self/fd", NEW_ROOT "/dev/fd"}, {"/proc/self/fd/0", NEW_ROOT "/dev/stdin"},
        {"/proc/self/fd/1", NEW_ROOT "/dev/stdout"}, {"/proc/self/fd/2", NEW_ROOT "/dev/stderr"}};
    for (size_t i = 0; i < 4; i++) CW_TRY("dev", symlink(dev_links[i][0], dev_links[i][1]));
    mount_tmpfs(NEW_ROOT "/dev/shm", cfg->workspace_mb < 64 ? cfg->workspace_mb : 64, MS_NOEXEC, "1777");

    write_small_file(NEW_ROOT "/etc/passwd", "sandbox:x:0:0:capsule sandbox:/workspace:/nonexistent\n");
    write_small_file(NEW_ROOT "/etc/group", "sandbox:x:0:\n");
    write_small_file(NEW_ROOT "/etc/hostname", "capsule\n");
    if (cfg->python_subprocess) {
        char conf[CW_MAX_ENTRIES * 128];
        cw_python_command_config(cfg, conf, sizeof conf);
        write_small_file(NEW_ROOT CW_PYTHON_CONFIG, conf);
    }

    make_node(NEW_ROOT "/proc", true);
    if (mount("proc", NEW_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL) < 0)
        cw_status("note /proc is not available in the sandbox: mounting it failed (%s)", strerror(errno));

    // pivot_root(".", ".") stacks the old root on the new one; detaching "." then drops it.
    CW_TRY("pivot-root", chdir(NEW_ROOT));
    CW_TRY("pivot-root", (int)syscall(SYS_pivot_root, ".", "."));
    CW_TRY("detach-old-root", umount2(".", MNT_DETACH));
    CW_TRY("pivot-root", chdir("/"));
    CW_TRY("remount-root-readonly", mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL));
    CW_TRY("chdir-workspace", chdir("/workspace"));
}
