// The embedded interpreter: isolated configuration (no site, no user site, no environment
// variables, no bytecode writes), a fixed module path, then capsule_worker.main.serve(channel).
// pid 1 initializes it (while the launcher moves the sandbox into its cgroup) and forks the
// process that serves; see run_init in sandbox.c.
#include "worker.h"
#include <Python.h>
#include <malloc.h>
#include <stdio.h>
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
