"""Worker entry point: the sandbox's C launcher runs `import capsule_worker.main; capsule_worker.main.serve(3)`.

Only `os`, `sys` and `frames` (with `_json`) load before `ready`; the session's modules load on the
first `execute`, and `ast`, `traceback`, `asyncio`, `linecache` only when a cell needs them.
"""
import os
import sys

from . import frames


def serve(fd: int) -> None:
    """Speak docs/protocol.md on fd until `shutdown` or EOF; never returns (os._exit)."""
    frames.start(fd)
    frames.send({"type": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
    session = None
    while True:
        msg = frames.recv()
        kind = msg["type"]
        if kind == "execute":
            if session is None:
                from .execute import Session
                session = Session()
            session.run(msg)
        elif kind == "shutdown":
            os._exit(0)  # not sys.exit: finalisation could wait forever on user threads
        # an input_reply while idle answers an input() that was interrupted: dropped
