// The embedded interpreter: isolated configuration (no site, no user site, no environment
// variables, no bytecode writes), a fixed module path, then capsule_worker.main.serve(channel).
// pid 1 initializes it (while the launcher moves the sandbox into its cgroup) and forks the
// process that serves; see run_init in sandbox.c.
#include "worker.h"
#include <Python.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void check(PyStatus status, const char *what) {
    if (PyStatus_Exception(status)) cw_fail("python-init", 0, status.err_msg ? status.err_msg : what);
}

static void append_path(PyConfig *config, const char *path) {
    wchar_t *wide = Py_DecodeLocale(path, NULL);
    if (!wide) cw_fail("python-init", 0, "cannot decode a module path");
    check(PyWideStringList_Append(&config->module_search_paths, wide), "module path");
    PyMem_RawFree(wide);
}

// The import failed: report the exception's text on the status pipe, as a stage error.
static _Noreturn void fail_with_exception(const char *stage) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *message = text ? PyUnicode_AsUTF8(text) : NULL;
    cw_fail(stage, 0, message ? message : "unknown error");
}

void *cw_python_start(const struct cw_config *cfg) {
    mallopt(M_ARENA_MAX, 2); // each glibc arena reserves 64 MiB of address space under RLIMIT_AS

    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;
    check(Py_PreInitialize(&pre), "pre-initialize");

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.user_site_directory = 0;
    config.write_bytecode = 0;
    config.pathconfig_warnings = 0;
    config.install_signal_handlers = 1;
    config.safe_path = 1;
    check(PyConfig_SetBytesString(&config, &config.home, cfg->python_home), "home");
    check(PyConfig_SetBytesString(&config, &config.program_name, "capsule-worker"), "program name");
    // Where the code can start Python again, sys.executable says so, as it would outside.
    if (cfg->python_subprocess) check(PyConfig_SetBytesString(&config, &config.executable, "/usr/bin/python3"), "executable");
    config.module_search_paths_set = 1;
    char dynload[4096];
    snprintf(dynload, sizeof dynload, "%s/lib-dynload", cfg->stdlib_path);
    append_path(&config, "/usr/lib/capsule");
    append_path(&config, cfg->stdlib_path);
    append_path(&config, dynload);
    for (size_t i = 0; i < cfg->n_python_dirs; i++) append_path(&config, cfg->python_dirs[i].inside);
    append_path(&config, "/workspace"); // the code's own modules, after the stdlib so they cannot shadow it by accident
    check(Py_InitializeFromConfig(&config), "initialize");
    PyConfig_Clear(&config);

    PyObject *module = PyImport_ImportModule("capsule_worker.main");
    if (!module) fail_with_exception("python-import");
    PyObject *preloaded = PyObject_CallMethod(module, "preload", NULL); // off the critical path, see main.py
    if (!preloaded) fail_with_exception("python-import");
    Py_DECREF(preloaded);
    return module;
}

pid_t cw_python_fork(void) {
    PyOS_BeforeFork();
    pid_t pid = fork();
    if (pid == 0) PyOS_AfterFork_Child();
    else PyOS_AfterFork_Parent();
    return pid;
}

_Noreturn void cw_python_serve(void *module, unsigned long max_frame_bytes) {
    close(CW_STATUS_FD); // user code must not be able to forge status lines
    // C's stdout is a pipe, so it would be fully buffered: C code's printf would arrive late, out
    // of order with print, or never (the worker ends with _exit). Unbuffered, each printf is a write.
    setvbuf(stdout, NULL, _IONBF, 0);
    PyObject *result = PyObject_CallMethod((PyObject *)module, "serve", "ik", CW_CHANNEL_FD, max_frame_bytes);
    if (!result) {
        if (PyErr_ExceptionMatches(PyExc_SystemExit)) PyErr_Print(); // exits with the code
        _exit(1);
    }
    _exit(0);
}

// --- python_subprocess ---------------------------------------------------------------------
// The policy lets the code start Python itself: subprocess.run([sys.executable, ...]),
// multiprocessing's spawn and forkserver, test runners that re-invoke the interpreter. This very
// binary is bound read-only at /usr/bin/python3.X (python3 and python link to it), and started by
// that name it is an ordinary interpreter (cw_python_command). Nothing of the sandbox is set up
// again: the namespaces, the seccomp filter, Landlock, the rlimits and the cgroup are inherited
// across execve, and Landlock lets exactly this file and its dynamic loader be executed.

// The PT_INTERP of the running program (the first object dl_iterate_phdr reports).
static int find_loader(struct dl_phdr_info *info, size_t size, void *out) {
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_INTERP) {
            snprintf(out, PATH_MAX, "%s", (const char *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr));
            break;
        }
    return 1;
}

void cw_add_python_command(struct cw_config *cfg) {
    if (!cfg->python_subprocess) return;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) cw_fail("python-subprocess", errno, "/proc/self/exe");
    self[n] = 0;
    dl_iterate_phdr(find_loader, cfg->loader);
    if (!cfg->loader[0]) cw_fail("python-subprocess", ENOEXEC, "capsule-worker names no dynamic loader (PT_INTERP)");
    snprintf(cfg->python_executable, sizeof cfg->python_executable, "/usr/bin/python%d.%d", PY_MAJOR_VERSION, PY_MINOR_VERSION);
    if (!cw_add_entry(cfg, CW_BIND_FILE, cfg->python_executable, self)) cw_fail("python-subprocess", EEXIST, cfg->python_executable);
    char name[32];
    snprintf(name, sizeof name, "python%d.%d", PY_MAJOR_VERSION, PY_MINOR_VERSION);
    cw_add_entry(cfg, CW_SYMLINK, "/usr/bin/python3", name);
    cw_add_entry(cfg, CW_SYMLINK, "/usr/bin/python", "python3");
}

// What CW_PYTHON_CONFIG holds: `home DIR`, then `site DIR` for each directory of an environment
// or python_path, in the session interpreter's order.
void cw_python_command_config(const struct cw_config *cfg, char *text, size_t size) {
    size_t used = (size_t)snprintf(text, size, "home %s\n", cfg->python_home);
    for (size_t i = 0; i < cfg->n_python_dirs && used < size; i++)
        used += (size_t)snprintf(text + used, size - used, "site %s\n", cfg->python_dirs[i].inside);
    if (used >= size) cw_fail("python-subprocess", ENAMETOOLONG, "the python path is too long");
}

bool cw_started_as_python(const char *argv0) {
    const char *base = strrchr(argv0, '/');
    return !strncmp(base ? base + 1 : argv0, "python", 6);
}

static _Noreturn void exit_with(PyStatus status) {
    if (PyStatus_IsExit(status)) _exit(status.exitcode);
    fprintf(stderr, "python: %s\n", status.err_msg ? status.err_msg : "cannot start");
    _exit(1);
}

// The channel a Python started from the session's code keeps the capabilities over: the
// descriptor CAPSULE_CHANNEL names (programs.py passes it), a socket, or -1. The variable is
// unset, so the interpreter's os.environ never shows it (and its own children get channels of
// their own).
static int take_channel(void) {
    const char *name = getenv("CAPSULE_CHANNEL");
    char *end = NULL;
    long fd = name ? strtol(name, &end, 10) : -1;
    unsetenv("CAPSULE_CHANNEL");
    struct stat info;
    if (!name || *end || fd < 3 || fd > INT_MAX || fstat((int)fd, &info) || !S_ISSOCK(info.st_mode)) return -1;
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

// capsule_worker.channel.start(fd), imported from the worker's own directory, which is on
// sys.path only for this import. What fails is printed, and the interpreter goes on without.
static void start_channel(int fd) {
    PyObject *path = PySys_GetObject("path"), *dir = PyUnicode_FromString("/usr/lib/capsule");
    PyObject *module = NULL;
    if (path && dir && PyList_Insert(path, 0, dir) == 0) {
        module = PyImport_ImportModule("capsule_worker.channel");
        PyObject *error_type, *error, *traceback;
        PyErr_Fetch(&error_type, &error, &traceback);
        Py_ssize_t at = PySequence_Index(path, dir);
        if (at >= 0) PySequence_DelItem(path, at);
        PyErr_Clear();
        PyErr_Restore(error_type, error, traceback);
    }
    PyObject *started = module ? PyObject_CallMethod(module, "start", "i", fd) : NULL;
    if (!started) {
        fprintf(stderr, "python: the session's capabilities are not available here:\n");
        PyErr_Print();
        close(fd);
    }
    Py_XDECREF(started);
    Py_XDECREF(module);
    Py_XDECREF(dir);
}

// An ordinary CPython: its command line, environment variables (PYTHONPATH, ...) and site, with
// the stdlib of the embedded libpython and the session's package directories after it; the
// session's capabilities where the process that started it passed a channel on.
_Noreturn void cw_python_command(int argc, char **argv) {
    mallopt(M_ARENA_MAX, 2);
    int channel = take_channel();
    FILE *conf = fopen(CW_PYTHON_CONFIG, "re");
    if (!conf) {
        fprintf(stderr, "%s: this is capsule's Python for inside a sandbox, and runs only there (%s: %s)\n",
                argv[0], CW_PYTHON_CONFIG, strerror(errno));
        _exit(1);
    }
    char *lines[CW_MAX_ENTRIES], line[PATH_MAX + 16];
    size_t n = 0;
    const char *home = "/usr";
    while (n < CW_MAX_ENTRIES && fgets(line, sizeof line, conf)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "home ", 5)) home = strdup(line + 5);
        else if (!strncmp(line, "site ", 5)) lines[n++] = strdup(line + 5);
    }
    fclose(conf);

    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    PyStatus status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(status)) status = PyConfig_SetBytesString(&config, &config.home, home);
    // argv[0] as a path (found on PATH, or /bin/sh's default /bin:/usr/bin, when it is a bare name)
    char executable[PATH_MAX];
    snprintf(executable, sizeof executable, "%s%s", strchr(argv[0], '/') ? "" : "/usr/bin/", argv[0]);
    if (!PyStatus_Exception(status)) status = PyConfig_SetBytesString(&config, &config.executable, executable);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) exit_with(status);

    PyObject *site = n > 0 ? PyImport_ImportModule("site") : NULL;
    for (size_t i = 0; i < n && site; i++) {
        PyObject *added = PyObject_CallMethod(site, "addsitedir", "s", lines[i]);
        if (!added) PyErr_Print();
        Py_XDECREF(added);
    }
    Py_XDECREF(site);
    if (channel >= 0) start_channel(channel);
    int code = Py_RunMain();
    fflush(NULL);
    _exit(code);
}
