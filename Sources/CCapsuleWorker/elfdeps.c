// What the new root must hold, read off this host rather than from a hand-written list:
// the libraries this process has loaded (libpython, libc, ...), the DT_NEEDED closure of the
// stdlib's C extension modules (libffi, libssl, ...), the stdlib itself and the worker package.
#include "worker.h"
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIRS 8
static char search_dirs[MAX_DIRS][PATH_MAX];
static size_t n_search_dirs;

static void add_search_dir(const char *dir) {
    for (size_t i = 0; i < n_search_dirs; i++)
        if (strcmp(search_dirs[i], dir) == 0) return;
    if (n_search_dirs < MAX_DIRS) snprintf(search_dirs[n_search_dirs++], PATH_MAX, "%s", dir);
}

static bool has_entry(const struct cw_config *cfg, const char *path) {
    for (size_t i = 0; i < cfg->n_entries; i++)
        if (strcmp(cfg->entries[i].path, path) == 0) return true;
    return false;
}

struct cw_entry *cw_add_entry(struct cw_config *cfg, int kind, const char *path, const char *source) {
    if (has_entry(cfg, path)) return NULL;
    if (cfg->n_entries == CW_MAX_ENTRIES) cw_fail("collect-runtime", E2BIG, "too many paths for the new root");
    struct cw_entry *e = &cfg->entries[cfg->n_entries++];
    e->kind = kind;
    e->path = strdup(path);
    e->source = strdup(source);
    e->fd = -1;
    e->no_symlinks = e->writable = e->detached = false;
    return e;
}

// realpath() of each search directory, computed once: realpath costs a readlink per component.
static const char *real_directory(const char *dir) {
    static char cache[MAX_DIRS * 2][2][PATH_MAX];
    static size_t n_cache;
    for (size_t i = 0; i < n_cache; i++)
        if (strcmp(cache[i][0], dir) == 0) return cache[i][1];
    if (n_cache == MAX_DIRS * 2) return NULL;
    snprintf(cache[n_cache][0], PATH_MAX, "%s", dir);
    if (!realpath(dir, cache[n_cache][1])) return NULL;
    return cache[n_cache++][1];
}

// Follows `name` in the (real) directory `dir` through same-directory symlinks, the usual shape
// of library links (libffi.so.8 -> libffi.so.8.1.2); anything else falls back to realpath().
// Returns false when the file does not exist.
static bool resolve_in(const char *dir, const char *name, char real[PATH_MAX]) {
    char current[PATH_MAX], target[PATH_MAX];
    snprintf(current, sizeof current, "%s/%s", dir, name);
    for (int hops = 0; hops < 8; hops++) {
        ssize_t n = readlink(current, target, sizeof target - 1);
        if (n < 0) {
            if (errno != EINVAL) return false; // ENOENT and friends: not here
            snprintf(real, PATH_MAX, "%s", current); // a regular file
            return true;
        }
        target[n] = 0;
        if (strchr(target, '/')) return realpath(current, real) != NULL;
        snprintf(current, sizeof current, "%s/%s", dir, target);
    }
    return realpath(current, real) != NULL;
}

// Binds the real file and, where the loader looks it up through a symlink, that symlink too.
// `dir` is where the loader finds `name`; returns false when it is not there.
static bool add_library_in(struct cw_config *cfg, const char *dir, const char *name, char real[PATH_MAX]) {
    const char *realdir = real_directory(dir);
    if (!realdir || !resolve_in(realdir, name, real)) return false;
    cw_add_entry(cfg, CW_BIND_FILE, real, real);
    char link[PATH_MAX];
    snprintf(link, sizeof link, "%s/%s", realdir, name);
    if (strcmp(link, real) != 0) cw_add_entry(cfg, CW_SYMLINK, link, real);
    return true;
}

// Each soname is resolved once; `seen` holds the names already handled.
#define MAX_NAMES 256
static char seen[MAX_NAMES][128];
static size_t n_seen;

static bool mark_seen(const char *name) {
    for (size_t i = 0; i < n_seen; i++)
        if (strcmp(seen[i], name) == 0) return false;
    if (n_seen < MAX_NAMES) snprintf(seen[n_seen++], sizeof seen[0], "%s", name);
    return true;
}

static int on_loaded_object(struct dl_phdr_info *info, size_t size, void *ctx) {
    (void)size;
    const char *name = info->dlpi_name;
    if (!name || name[0] != '/') return 0; // the main program and the vDSO
    char dir[PATH_MAX], real[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", name);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    add_search_dir(dir);
    add_library_in(ctx, dir, slash + 1, real);
    mark_seen(slash + 1);
    return 0;
}

// Reads the DT_NEEDED names of a 64-bit ELF shared object; returns how many were stored.
static size_t read_needed(const char *path, char names[][128], size_t max) {
    size_t count = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    Elf64_Ehdr eh;
    if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phnum == 0 || eh.e_phnum > 64)
        goto out;
    Elf64_Phdr ph[64];
    size_t phsize = sizeof(Elf64_Phdr) * eh.e_phnum;
    if (pread(fd, ph, phsize, (off_t)eh.e_phoff) != (ssize_t)phsize) goto out;
    const Elf64_Phdr *dynamic = NULL;
    for (int i = 0; i < eh.e_phnum; i++)
        if (ph[i].p_type == PT_DYNAMIC) dynamic = &ph[i];
    if (!dynamic || dynamic->p_filesz > 64 * 1024) goto out;
    Elf64_Dyn dyn[4096];
    ssize_t got = pread(fd, dyn, dynamic->p_filesz, (off_t)dynamic->p_offset);
    if (got <= 0) goto out;
    size_t n = (size_t)got / sizeof(Elf64_Dyn);
    Elf64_Addr strtab = 0;
    for (size_t i = 0; i < n && dyn[i].d_tag != DT_NULL; i++)
        if (dyn[i].d_tag == DT_STRTAB) strtab = dyn[i].d_un.d_ptr;
    off_t stroff = -1; // the string table's file offset, through the PT_LOAD that maps it
    for (int i = 0; i < eh.e_phnum; i++)
        if (ph[i].p_type == PT_LOAD && strtab >= ph[i].p_vaddr && strtab < ph[i].p_vaddr + ph[i].p_filesz)
            stroff = (off_t)(strtab - ph[i].p_vaddr + ph[i].p_offset);
    if (stroff < 0) goto out;
    for (size_t i = 0; i < n && dyn[i].d_tag != DT_NULL && count < max; i++) {
        if (dyn[i].d_tag != DT_NEEDED) continue;
        ssize_t len = pread(fd, names[count], 127, stroff + (off_t)dyn[i].d_un.d_val);
        if (len <= 0) continue;
        names[count][len] = 0;
        if (strlen(names[count]) < (size_t)len) count++; // a terminated name
    }
out:
    close(fd);
    return count;
}

// Binds the library the loader would find for `name` in the search directories (its real path
// in `real`); false when none holds it.
static bool add_library_found(struct cw_config *cfg, const char *name, char real[PATH_MAX]) {
    for (size_t d = 0; d < n_search_dirs; d++)
        if (add_library_in(cfg, search_dirs[d], name, real)) return true;
    return false;
}

static void add_needed_closure(struct cw_config *cfg, const char *object, int depth) {
    char names[64][128], real[PATH_MAX];
    size_t n = read_needed(object, names, 64);
    for (size_t i = 0; i < n; i++)
        if (mark_seen(names[i]) && add_library_found(cfg, names[i], real) && depth < 8) add_needed_closure(cfg, real, depth + 1);
}

// Top-level symlinks such as /lib -> usr/lib, so that paths through them resolve inside too.
static void add_root_symlinks(struct cw_config *cfg) {
    DIR *root = opendir("/");
    if (!root) return;
    struct dirent *d;
    while ((d = readdir(root))) {
        if (d->d_type != DT_LNK) continue;
        char path[PATH_MAX], target[PATH_MAX];
        snprintf(path, sizeof path, "/%s", d->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        if (strncmp(d->d_name, "lib", 3) == 0 || strcmp(d->d_name, "bin") == 0 || strcmp(d->d_name, "sbin") == 0)
            cw_add_entry(cfg, CW_SYMLINK, path, target);
    }
    closedir(root);
}

// The host libraries the loader would find for `name` (a soname, no slashes), and their closure.
static void add_library_named(struct cw_config *cfg, const char *name) {
    char real[PATH_MAX];
    if (!name[0] || strchr(name, '/') || strlen(name) >= 128 || !mark_seen(name)) return;
    if (add_library_found(cfg, name, real)) add_needed_closure(cfg, real, 1);
}

// The system libraries a manylinux wheel may link against (PEP 599's list, less the graphical
// ones): an environment's or python_path's C extensions find them inside.
static const char *const manylinux_libraries[] = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libutil.so.1", "libresolv.so.2",
    "libnsl.so.1", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1", "libexpat.so.1"};

static void find_search_dirs(struct cw_config *cfg) {
    dl_iterate_phdr(on_loaded_object, cfg);
    add_search_dir("/lib");
    add_search_dir("/usr/lib");
}

// Walks `dir` (not following symbolic links) for shared objects, and prints each library they
// need that the host's library directories hold, once.
static void print_needed_in(struct cw_config *scratch, const char *dir, int depth) {
    DIR *stream = depth < 32 ? opendir(dir) : NULL;
    if (!stream) return;
    struct dirent *d;
    while ((d = readdir(stream))) {
        if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, d->d_name) >= (int)sizeof path) continue;
        struct stat st;
        if (lstat(path, &st) < 0) continue;
        if (S_ISDIR(st.st_mode)) {
            print_needed_in(scratch, path, depth + 1);
        } else if (S_ISREG(st.st_mode) && strstr(d->d_name, ".so")) {
            char names[64][128], real[PATH_MAX];
            size_t n = read_needed(path, names, 64);
            for (size_t i = 0; i < n; i++)
                if (mark_seen(names[i]) && add_library_found(scratch, names[i], real)) printf("%s\n", names[i]);
        }
    }
    closedir(stream);
}

int cw_print_needed_libraries(const char *dir) {
    static struct cw_config scratch; // the entries are only looked at, never mounted
    find_search_dirs(&scratch);
    n_seen = 0; // the launcher's own libraries are needed too: print them as well
    print_needed_in(&scratch, dir, 0);
    return 0;
}

// What a host path the command line names may be: anything but a socket (connect() ignores a
// read-only mount, so a bound socket would reach its host daemon), a directory or regular file
// only, or a directory only.
enum literal_kind { NOT_A_SOCKET, FILE_OR_DIRECTORY, DIRECTORY };

// `host`, taken literally (a symbolic link anywhere in it is refused, so a path means itself),
// bound read-only at `inside`; a failure is reported as `stage`. The entry, or NULL if `inside` was there already.
static struct cw_entry *bind_literally(struct cw_config *cfg, const char *stage, const char *inside, const char *host, enum literal_kind kind) {
    struct stat st;
    int fd = cw_open_no_symlinks(host);
    if (fd < 0 || fstat(fd, &st) < 0) cw_fail(stage, errno, host);
    close(fd);
    bool dir = S_ISDIR(st.st_mode);
    if (kind == DIRECTORY && !dir) cw_fail(stage, ENOTDIR, host);
    if (S_ISSOCK(st.st_mode) || (kind == FILE_OR_DIRECTORY && !dir && !S_ISREG(st.st_mode))) cw_fail(stage, ENOTSUP, host);
    struct cw_entry *entry = cw_add_entry(cfg, dir ? CW_BIND_DIR : CW_BIND_FILE, inside, host);
    if (entry) entry->no_symlinks = true;
    return entry;
}

// Whether `a` is `b` or lies under it.
static bool at_or_under(const char *a, const char *b) {
    size_t n = strlen(b);
    return !strncmp(a, b, n) && (a[n] == 0 || a[n] == '/' || (n == 1 && b[0] == '/'));
}

// HOST:DEST[:rw]: the host path (taken literally) bound at DEST, read-only unless `:rw`, a place
// of its own: not over or under anything the root already holds (the runtime, /usr/lib/capsule, ...).
static void add_mount(struct cw_config *cfg, char *spec) {
    char *colon = strchr(spec, ':');
    if (!colon || colon == spec || colon[1] != '/') cw_fail("arguments", EINVAL, "--mount HOST:DEST[:rw]");
    *colon = 0;
    const char *host = spec, *dest = colon + 1;
    char *mode = strchr(colon + 1, ':');
    bool writable = mode && !strcmp(mode, ":rw");
    if (mode && !writable) cw_fail("arguments", EINVAL, "--mount HOST:DEST[:rw]");
    if (mode) *mode = 0;
    for (size_t i = 0; i < cfg->n_entries; i++)
        if (at_or_under(dest, cfg->entries[i].path) || at_or_under(cfg->entries[i].path, dest)) cw_fail("mount", EEXIST, dest);
    struct cw_entry *entry = bind_literally(cfg, "mount", dest, host, FILE_OR_DIRECTORY);
    if (entry && writable) entry->writable = cfg->writable_mounts = true;
}

void cw_collect_runtime(struct cw_config *cfg) {
    add_root_symlinks(cfg);
    find_search_dirs(cfg);

    cw_add_entry(cfg, CW_BIND_DIR, cfg->stdlib_path, cfg->stdlib_path);
    char dynload[PATH_MAX];
    snprintf(dynload, sizeof dynload, "%s/lib-dynload", cfg->stdlib_path);
    DIR *dir = opendir(dynload);
    if (!dir) cw_fail("collect-runtime", errno, dynload);
    struct dirent *d;
    while ((d = readdir(dir))) {
        size_t len = strlen(d->d_name);
        if (len < 4 || strcmp(d->d_name + len - 3, ".so") != 0) continue;
        char object[PATH_MAX];
        snprintf(object, sizeof object, "%s/%s", dynload, d->d_name);
        add_needed_closure(cfg, object, 0);
    }
    closedir(dir);

    cw_add_entry(cfg, CW_BIND_DIR, "/usr/lib/capsule", cfg->worker_path);
    cw_collect_host_files(cfg);
    // Paths the policy names are taken literally: a symlink in one could point anywhere, so that a
    // policy narrowing another's readonly_paths by text would widen them in fact.
    for (size_t i = 0; i < cfg->n_readonly; i++)
        bind_literally(cfg, "readonly-path", cfg->readonly_paths[i], cfg->readonly_paths[i], NOT_A_SOCKET);
    for (size_t i = 0; i < cfg->n_script_files; i++)
        bind_literally(cfg, "readonly-path", cfg->script_files[i], cfg->script_files[i], NOT_A_SOCKET);
    cw_add_python_command(cfg); // before the mounts, which may not cover it
    for (size_t i = 0; i < cfg->n_mounts; i++) add_mount(cfg, cfg->mounts[i]);
    if (cfg->n_python_dirs > 0)
        for (size_t i = 0; i < sizeof manylinux_libraries / sizeof manylinux_libraries[0]; i++)
            add_library_named(cfg, manylinux_libraries[i]);
    for (size_t i = 0; i < cfg->n_libraries; i++) add_library_named(cfg, cfg->libraries[i]);
    for (size_t i = 0; i < cfg->n_python_dirs; i++)
        bind_literally(cfg, "python-path", cfg->python_dirs[i].inside, cfg->python_dirs[i].source, DIRECTORY);
}
