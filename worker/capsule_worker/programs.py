"""Programs cannot be started inside the sandbox: say so where ordinary code tries.

The seccomp filter refuses execve, so no program ever starts; on its own that shows as a bare
`PermissionError: [Errno 1] Operation not permitted`, a silent shell status 127 from os.system,
or a child that dies before multiprocessing can talk to it (BrokenPipeError). This module makes
each of those say why. It is no security boundary: code can undo it, and the kernel still refuses.
"""
import sys

EPERM = 1  # errno.EPERM, so a refusal is the same OSError the kernel gives
WHY = "capsule: programs cannot be started inside the sandbox (execve is not allowed)"
_HINT = "; do the work in Python (os.fork() and multiprocessing's 'fork' start method work)"
_MULTIPROCESSING_HINT = ("; multiprocessing's 'spawn' and 'forkserver' start methods start a new Python: "
                         "use the 'fork' start method, multiprocessing.get_context('fork')")


def install():
    """Hook the ways Python starts programs: os.exec*, os.posix_spawn*, os.system (audit events) and
    _posixsubprocess.fork_exec, which subprocess and multiprocessing call directly."""
    import _posixsubprocess
    _posixsubprocess.fork_exec = _fork_exec
    sys.addaudithook(_audit)


def refusal(program, argv=()):
    """The PermissionError (errno EPERM, as from the kernel) for starting `program`."""
    spawn = any("multiprocessing" in str(arg) for arg in argv)
    return PermissionError(EPERM, WHY + (_MULTIPROCESSING_HINT if spawn else _HINT), program or None)


def _fork_exec(args, executables, *rest):
    raise refusal(args[0] if args else executables[0] if executables else None, args or ())


def _audit(event, args):
    if event not in _EVENTS:
        return
    if event == "os.system":  # CPython's os.system never raises; it returns what the shell would
        command = args[0].decode("utf-8", "replace") if isinstance(args[0], bytes) else str(args[0])
        try:
            sys.stderr.write(f"{WHY}: os.system({command[:200]!r}) returns exit status 127 (32512) "
                             f"without running anything{_HINT}\n")
        except Exception:
            pass
        return
    raise refusal(args[0], args[1])  # os.exec and os.posix_spawn: (path, argv, env)


_EVENTS = frozenset(("os.exec", "os.posix_spawn", "os.system"))


def untrack(resource_tracker):
    """multiprocessing's resource tracker is a helper program, which cannot start here. Registering
    shared memory and semaphores with it does nothing instead (what it would clean up ends with the
    sandbox), so SharedMemory works; asking for the tracker itself (the spawn and forkserver start
    methods) still raises the refusal."""
    tracker = getattr(resource_tracker, "ResourceTracker", None)
    if tracker is not None and hasattr(tracker, "_send"):
        tracker._send = lambda self, cmd, name, rtype: None
