"""Python started again inside the sandbox (python_subprocess) keeps the session's capabilities.

The process that started it passed a channel across the execve (programs.py, children.for_program)
and named its descriptor in CAPSULE_CHANNEL, which python.c reads and unsets before the
interpreter starts, then calls `start` here. The first frame on it is `configure`, the session's
own capabilities; `import capsule` builds the module from it, on first use. Calls go to the
parent's relay, which makes them as the session's; this interpreter's own forks and Pythons get
channels to it in turn, hop by hop.
"""
import sys

from . import children, frames, programs


def start(fd):
    """Adopt fd as the channel, when it carries `configure`; else close it and go on without."""
    msg = children.read_frame(fd)
    if not (isinstance(msg, dict) and msg.get("type") == "configure" and isinstance(msg.get("capabilities"), list)):
        children.close(fd)
        return
    size = msg.get("max_frame")
    frames.adopt(fd)
    frames.limit(size if isinstance(size, int) and size > 0 else frames.MAX_FRAME)
    sys.meta_path.insert(0, _Capsule)
    programs.install()
    children.install(msg["capabilities"])
    import atexit
    atexit.register(children.stop)  # this interpreter finalizes, unlike the session's worker


class _Capsule:
    """Finds `capsule`: the module the session's code imports, built from `configure` when first imported."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "capsule":
            return None
        from importlib.machinery import ModuleSpec
        return ModuleSpec(name, cls)

    @staticmethod
    def create_module(spec):
        from . import capabilities
        return capabilities.install(children.described, {})

    @staticmethod
    def exec_module(module):
        pass
