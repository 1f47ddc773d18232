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


def preload_modules(modules: list) -> dict:
    """[sandbox] preload: import each module now, before any execution, with what it prints
    dropped; the answer names those that failed and why."""
    import importlib, io
    from time import perf_counter
    start = perf_counter()
    skipped = {}
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt from a module's top level too
                skipped[str(name)[:200]] = frames.clip(f"{type(exc).__name__}: {exc}", 300)
    finally:
        sys.stdout, sys.stderr = saved
    return {"type": "preloaded", "skipped": skipped, "duration": perf_counter() - start}


def completeness(cid: str, code: str) -> dict:
    """Whether `code` is a whole statement as Python's interactive console reads one (codeop, mode
    "single"): `complete`, `incomplete` (more lines may make it whole) or `invalid`; and whether a
    blank line would complete it (a compound statement whose block may end there). Imports codeop
    (~1 ms) on first use."""
    import codeop
    try:
        if codeop.compile_command(code, "<stdin>", "single") is not None:
            return {"type": "completeness", "id": cid, "status": "complete", "blank_line_completes": False}
    except (SyntaxError, OverflowError, ValueError):
        return {"type": "completeness", "id": cid, "status": "invalid", "blank_line_completes": False}
    try:
        closes = codeop.compile_command(code + "\n", "<stdin>", "single") is not None
    except (SyntaxError, OverflowError, ValueError):
        closes = False
    return {"type": "completeness", "id": cid, "status": "incomplete", "blank_line_completes": closes}


def serve(fd: int, max_frame: int = frames.MAX_FRAME) -> None:
    """Speak docs/protocol.md on fd until `shutdown` or EOF, which end the process (frames.recv);
    frames up to max_frame bytes (the policy's limits.max_frame_bytes) are accepted."""
    frames.start(fd, max_frame)
    frames.send({"type": "ready", "pid": posix.getpid(), "python": sys.version.split()[0]})
    session = None
    granted = []  # the `configure` message's capabilities, sent once before the first execute
    while True:
        try:
            # Tasks an execution left on the event loop run on while the worker waits.
            msg = session.idle() if session is not None and session.waiting_tasks() else frames.recv()
            if msg["type"] == "configure":
                granted = msg["capabilities"]
            elif msg["type"] == "complete":
                frames.send(completeness(msg["id"], msg["code"]))
            elif msg["type"] in ("execute", "checkpoint", "restore", "preload"):
                if session is None:
                    from .execute import Session
                    session = Session(granted)
                if msg["type"] == "execute":
                    session.run(msg)
                elif msg["type"] == "preload":
                    frames.send(preload_modules(msg["modules"]))
                else:
                    from . import checkpoints
                    checkpoints.answer(session, msg)
        except BaseException as exc:  # the worker's own code failed (user code's errors are caught in run)
            why = "the worker failed"
            try:
                why = f"{why}: {type(exc).__name__}: {exc}"[:2000]
            finally:
                frames.die(why, 1)
        # an input_reply while idle answers an input() that was interrupted: dropped
