"""Checkpoint and restore of the session's namespace (docs/protocol.md, `checkpoint` and `restore`).

A checkpoint is one pickle of what the namespace holds, taken name by name so that one value that
cannot be pickled skips only itself:
- modules are recorded by name and imported again;
- functions and classes defined in __main__ are recorded by their source (the linecache entries
  execute.py keeps), because pickle stores those by reference to a __main__ that a fresh session
  lacks;
- everything else goes through pickle.

The supervisor keeps the bytes and never unpickles them; restoring unpickles inside the sandbox
that restores them, under that sandbox's policy. Imports `pickle` (and `inspect` for sources) on
first use.
"""
import sys
from binascii import a2b_base64, b2a_base64

from . import frames

# Names the engine maintains: the interactive history, rebuilt by the session that restores.
_HISTORY = frozenset(("In", "Out", "_", "__", "___"))


def answer(session, msg):
    """Answer a `checkpoint` or `restore` message for `session` (an execute.Session). Both run as
    user code does (the values' own pickling and the restored sources are user code): SIGINT
    interrupts them, and whatever they raise becomes the answer's `error`."""
    kind = "checkpoint_data" if msg["type"] == "checkpoint" else "restored"
    try:
        if msg["type"] == "checkpoint":
            reply = frames.call_user(_checkpoint, session.ns, msg["id"])
        else:
            reply = frames.call_user(_restore, session.ns, msg["id"], a2b_base64(msg["data"]), msg["replace"])
        frames.send_whole(reply)
    except BaseException as exc:  # over the frame limit, KeyboardInterrupt, a broken checkpoint
        why = frames.clip(f"{type(exc).__name__}: {exc}", 2000)
        frames.send({"type": kind, "id": msg["id"], "error": why, "names": [], "skipped": {}})


def _user_names(ns):
    """The namespace's names that belong to the code: not dunders, the history, or the capabilities the engine put there."""
    capsule = sys.modules.get("capsule")
    for name, value in list(ns.items()):
        if name.startswith("__") and name.endswith("__") or name in _HISTORY:
            continue
        if capsule is not None and getattr(capsule, name, None) is value and not isinstance(value, type(sys)):
            continue
        yield name, value


def _checkpoint(ns, cid):
    import pickle
    modules, sources, values, names, skipped = {}, [], {}, [], {}
    for name, value in _user_names(ns):
        if isinstance(value, type(sys)):
            modules[name] = value.__name__
        elif _defined_here(value):
            source = _source(value)
            if source is None:
                skipped[name] = f"{type(value).__name__} defined in __main__ whose source is unknown (made by exec?)"
                continue
            sources.append((name, value.__name__, source))
        else:
            try:
                values[name] = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                skipped[name] = frames.clip(f"{type(value).__name__} cannot be pickled: {type(exc).__name__}: {exc}", 300)
                continue
        names.append(name)
    data = pickle.dumps({"modules": modules, "sources": sources, "values": values}, protocol=pickle.HIGHEST_PROTOCOL)
    return {"type": "checkpoint_data", "id": cid, "data": b2a_base64(data, newline=False).decode("ascii"),
            "names": names, "skipped": skipped}


def _defined_here(value):
    """A function or class defined in __main__, which pickle would store by a reference that a
    fresh session cannot resolve. (An instance of such a class pickles: its class comes first.)"""
    if getattr(value, "__module__", None) != "__main__":
        return False
    return isinstance(value, type) or hasattr(value, "__code__")


def _source(value):
    try:
        import inspect
        return inspect.getsource(value)
    except (OSError, TypeError):
        return None


def _restore(ns, rid, data, replace):
    import pickle
    state = pickle.loads(data)
    if replace:
        for name, _ in list(_user_names(ns)):
            del ns[name]
    names, skipped = [], {}
    for name, module in state["modules"].items():
        try:
            __import__(module)
            ns[name] = sys.modules[module]
            names.append(name)
        except Exception as exc:
            skipped[name] = frames.clip(f"import {module} failed: {type(exc).__name__}: {exc}", 300)
    for name, defined, source in state["sources"]:
        try:
            exec(compile(_dedent(source), f"<checkpoint: {name}>", "exec"), ns)
            if defined != name and defined in ns:  # bound to another name (a lambda binds its own line's)
                ns[name] = ns[defined]
            names.append(name)
        except Exception as exc:
            skipped[name] = frames.clip(f"its source did not run: {type(exc).__name__}: {exc}", 300)
    for name, blob in state["values"].items():
        try:
            ns[name] = pickle.loads(blob)
            names.append(name)
        except Exception as exc:
            skipped[name] = frames.clip(f"it did not unpickle: {type(exc).__name__}: {exc}", 300)
    return {"type": "restored", "id": rid, "names": names, "skipped": skipped}


def _dedent(source):
    """A method's or nested function's source starts indented; top-level code may not."""
    lines = source.splitlines(True)
    margin = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "".join(line[margin:] for line in lines)
