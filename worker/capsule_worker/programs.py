"""Programs cannot be started inside the sandbox: say so where ordinary code tries.

The seccomp filter refuses execve, so no program ever starts; on its own that shows as a bare
`PermissionError: [Errno 1] Operation not permitted`, a silent shell status 127 from os.system,
or a child that dies before multiprocessing can talk to it (BrokenPipeError). This module makes
each of those say why. It is no security boundary: code can undo it, and the kernel still refuses.

Where the policy says `[sandbox] python_subprocess = true`, sys.executable (/usr/bin/python3)
starts Python again, under the same sandbox: that passes, and only that (Landlock lets the
kernel execute that one file); anything else is refused here with a sentence saying so. That
Python keeps the session's capabilities: it gets a channel of its own to this process, relayed
as a forked child's is (children.for_program, channel.py).
"""
import os
import sys

EPERM = 1  # errno.EPERM, so a refusal is the same OSError the kernel gives
WHY = "capsule: programs cannot be started inside the sandbox (execve is not allowed)"
_HINT = ("; do the work in Python (os.fork() and multiprocessing's 'fork' start method work), or let the policy "
         "start Python itself with [sandbox] python_subprocess = true")
_MULTIPROCESSING_HINT = ("; multiprocessing's 'spawn' and 'forkserver' start methods start a new Python: "
                         "use the 'fork' start method, multiprocessing.get_context('fork'), or let the policy "
                         "start Python itself with [sandbox] python_subprocess = true")
ONLY_PYTHON = ("capsule: only Python itself (sys.executable, /usr/bin/python3) can be started inside the sandbox "
               "([sandbox] python_subprocess = true); other programs are not there to run")

_PYTHON_CONFIG = "/opt/capsule/python.conf"
CHANNEL_VARIABLE = b"CAPSULE_CHANNEL"  # names the channel's descriptor to Python started again; python.c reads and unsets it
_python = None  # the real path of sys.executable, where the policy lets Python start again


def install():
    """Hook the ways Python starts programs: os.exec*, os.posix_spawn*, os.system (audit events) and
    _posixsubprocess.fork_exec, which subprocess and multiprocessing call directly."""
    global _python
    import _posixsubprocess
    # The launcher writes this file into the root only with python_subprocess (see python.c).
    _python = os.path.realpath(sys.executable) if sys.executable and os.path.exists(_PYTHON_CONFIG) else None
    original = _posixsubprocess.fork_exec

    def fork_exec(args, executables, close_fds, pass_fds, cwd, env, *rest):
        if not any(_is_python(path) for path in executables):
            raise refusal(args[0] if args else executables[0] if executables else None, args or ())
        channel = _channel()
        if channel is None:
            return original(args, executables, close_fds, pass_fds, cwd, env, *rest)
        try:
            pass_fds = tuple(sorted({*pass_fds, channel}))
            env = [*(item for item in (env if env is not None else (b"%s=%s" % pair for pair in os.environb.items()))
                     if not item.startswith(CHANNEL_VARIABLE + b"=")), b"%s=%d" % (CHANNEL_VARIABLE, channel)]
            return original(args, executables, close_fds, pass_fds, cwd, env, *rest)
        finally:
            os.close(channel)

    _posixsubprocess.fork_exec = fork_exec
    os.posix_spawn, os.posix_spawnp = _spawning(os.posix_spawn), _spawning(os.posix_spawnp)
    sys.addaudithook(_audit)


def _spawning(spawn):
    """os.posix_spawn (subprocess's way with close_fds=False) passing the channel on as fork_exec
    does: a dup2 onto itself clears its close-on-exec flag (glibc 2.29 and later)."""

    def posix_spawn(path, argv, env, *, file_actions=None, **options):
        channel = _channel() if _is_python(path) else None
        if channel is None:
            return spawn(path, argv, env, file_actions=file_actions, **options)
        try:
            env = {**{key: value for key, value in env.items() if os.fsencode(key) != CHANNEL_VARIABLE},
                   CHANNEL_VARIABLE.decode(): str(channel)}
            actions = [*(file_actions or ()), (os.POSIX_SPAWN_DUP2, channel, channel)]
            return spawn(path, argv, env, file_actions=actions, **options)
        finally:
            os.close(channel)

    posix_spawn.__doc__, posix_spawn.__name__ = spawn.__doc__, spawn.__name__
    return posix_spawn


def _channel():
    """A channel for the Python about to start, so that it keeps the session's capabilities
    (children.for_program), in a process that has them; else None."""
    from . import children
    return children.for_program()


def _is_python(path):
    if _python is None or path is None:
        return False
    try:
        return os.path.realpath(os.fsdecode(path)) == _python
    except (TypeError, ValueError):
        return False


def refusal(program, argv=()):
    """The PermissionError (errno EPERM, as from the kernel) for starting `program`."""
    if _python is not None:
        return PermissionError(EPERM, ONLY_PYTHON, program or None)
    spawn = any("multiprocessing" in str(arg) for arg in argv)
    return PermissionError(EPERM, WHY + (_MULTIPROCESSING_HINT if spawn else _HINT), program or None)


def _audit(event, args):
    if event not in _EVENTS:
        return
    if event == "os.system":  # CPython's os.system never raises; it returns what the shell would
        command = args[0].decode("utf-8", "replace") if isinstance(args[0], bytes) else str(args[0])
        why, hint = (ONLY_PYTHON, " (it needs /bin/sh)") if _python is not None else (WHY, _HINT)
        try:
            sys.stderr.write(f"{why}: os.system({command[:200]!r}) returns exit status 127 (32512) "
                             f"without running anything{hint}\n")
        except Exception:
            pass
        return
    if not _is_python(args[0]):
        raise refusal(args[0], args[1])  # os.exec and os.posix_spawn: (path, argv, env)


_EVENTS = frozenset(("os.exec", "os.posix_spawn", "os.system"))


def untrack(resource_tracker):
    """multiprocessing's resource tracker is a helper program, which cannot start here (unless Python
    may start again). Registering shared memory and semaphores with it does nothing instead (what it
    would clean up ends with the sandbox), so SharedMemory works; asking for the tracker itself (the
    spawn and forkserver start methods) still raises the refusal."""
    if _python is not None:
        return
    tracker = getattr(resource_tracker, "ResourceTracker", None)
    if tracker is not None and hasattr(tracker, "_send"):
        tracker._send = lambda self, cmd, name, rtype: None


def main_by_name_only(spawn):
    """multiprocessing's spawn and forkserver children re-run __main__ from its __file__. An
    execution's __main__ has a pseudo-name there (<string>, a cell's), which is no file to run:
    the child then starts with the parent's __main__ unrun, as it does under python3 -c."""
    prepare = spawn.get_preparation_data

    def get_preparation_data(name):
        data = prepare(name)
        if os.path.basename(data.get("init_main_from_path", "")).startswith("<"):
            del data["init_main_from_path"]
        return data

    spawn.get_preparation_data = get_preparation_data
