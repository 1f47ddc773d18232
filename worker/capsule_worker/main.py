"""Worker entry point: the sandbox's C launcher runs `import capsule_worker.main; capsule_worker.main.serve(3)`.

Only `sys`, `posix` (builtin) and `frames` (with `_json`) load before `ready`; the session's modules load on the
first `execute` (or earlier through `preload`), and `ast`, `traceback`, `asyncio`, `linecache` only when a cell
needs them.
"""
import posix
import sys

from . import frames


def preload() -> None:
    """Import the session's modules now. The sandbox's pid 1 calls this while it waits for its cgroup,
    so the first `execute` does not pay for them on the critical path."""
    from . import execute  # noqa: F401


def serve(fd: int, max_frame: int = frames.MAX_FRAME) -> None:
    """Speak docs/protocol.md on fd until `shutdown` or EOF, which end the process (frames.recv);
    frames up to max_frame bytes (the policy's limits.max_frame_bytes) are accepted."""
    frames.start(fd, max_frame)
    frames.send({"type": "ready", "pid": posix.getpid(), "python": sys.version.split()[0]})
    session = None
    granted = []  # the `configure` message's capabilities, sent once before the first execute
    while True:
        try:
            msg = frames.recv()
            if msg["type"] == "configure":
                granted = msg["capabilities"]
            elif msg["type"] == "execute":
                if session is None:
                    from .execute import Session
                    session = Session(granted)
                session.run(msg)
        except BaseException as exc:  # the worker's own code failed (user code's errors are caught in run)
            why = "the worker failed"
            try:
                why = f"{why}: {type(exc).__name__}: {exc}"[:2000]
            finally:
                frames.die(why, 1)
        # an input_reply while idle answers an input() that was interrupted: dropped
