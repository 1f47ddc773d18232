"""Runs `execute` requests in the session's persistent __main__ namespace and reports the outcome."""
import builtins
import io
import os
import sys
from time import perf_counter

from . import capabilities, children, frames, programs, rich, streams

# compile() flags, hard-coded because `import ast` costs ~5 ms (same values as ast.PyCF_* / inspect.CO_*)
ONLY_AST = 0x400
TOP_LEVEL_AWAIT = 0x2000
CO_COROUTINE = 0x80

_sources = {}  # filename -> linecache entry of the latest code executed under that name
_ballast = [bytes(1 << 21)]  # calloc'd, so address space only; released to give the MemoryError path room


class Session:
    def __init__(self, granted=()):
        self.module = type(sys)("__main__")
        self.module.__builtins__ = builtins
        self.ns = self.module.__dict__
        self.launcher_main = sys.modules.get("__main__")  # the embedding may hold only a borrowed ref
        sys.modules["__main__"] = self.module
        self.loop = None  # asyncio loop for top-level await, created on first use and kept
        # In and Out as IPython keeps them, for interactive executions (not scripts): In[n] is the
        # code of the nth, Out[n] its value when it had one. The worker keeps its own references,
        # so code that rebinds or deletes the names breaks nothing (a deleted name comes back).
        self.inputs, self.outputs = [""], {}
        streams.install()
        _limit_thread_pools()
        _install_site_builtins()
        capabilities.install(granted, self.ns)
        rich.display_granted = any(c["name"] == "display" for c in granted)
        programs.install()
        children.install(granted)
        _AfterImport.hooks.update({"linecache": _seed_linecache, "multiprocessing.resource_tracker": programs.untrack,
                                   "multiprocessing.spawn": programs.main_by_name_only,
                                   "matplotlib": rich.use_agg, "matplotlib.pyplot": rich.patch_pyplot})
        _add_site_directories()
        sys.meta_path.insert(0, _AfterImport)

    def run(self, msg):
        start = perf_counter()
        rid = streams.current_id = msg["id"]
        sys.argv = list(msg["argv"])
        self.ns["__file__"] = msg["filename"]
        status, exit_code, cells = "ok", None, ()
        try:
            source = msg.get("code")
            if source is None:
                from binascii import a2b_base64
                source = _script_source(a2b_base64(msg["source"]), msg["filename"])
                _put_script_directory_first(msg["filename"])
            _remember(msg["filename"], source)
            count = self._count_input(source) if msg["result"] and isinstance(source, str) else None
            cells = _compile(source, msg["filename"], msg["result"])
            value, text = frames.call_user(self._run_cell, *cells)
            if children.forked:
                children.end(0)
            if text is not None:
                data = frames.call_user(rich.result_data, value, text)
                streams.flush()
                frames.send({"type": "result", "id": rid, "data": data})
                self.ns["___"], self.ns["__"], self.ns["_"] = self.ns.get("__"), self.ns.get("_"), value
                if count is not None:
                    self.outputs[count] = value
            if "matplotlib.pyplot" in sys.modules:  # figures left open are shown, as in a notebook
                frames.call_user(rich.show_open_figures)
        except SystemExit as exc:
            exit_code = _exit_code(exc.code)
            status = "ok" if exit_code == 0 else "error"
            if children.forked:
                children.end(exit_code)
        except BaseException as exc:
            if children.forked:
                _strip_worker_frames(exc, cells)
                children.end(1, exc)
            if isinstance(exc, MemoryError):
                _ballast.clear()
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            _send_or(lambda: _error_frame(exc, rid, cells), _OOM_ERROR, rid)
        children.drain()
        done = {"type": "done", "id": rid, "status": status, "duration": perf_counter() - start}
        if exit_code is not None:
            done["exit_code"] = exit_code
        _send_or(lambda: done, _OOM_DONE, rid)

    def _count_input(self, source):
        """Record an interactive execution's code in In; its number."""
        self.inputs.append(source)
        self.ns.setdefault("In", self.inputs)
        self.ns.setdefault("Out", self.outputs)
        return len(self.inputs) - 1

    def waiting_tasks(self):
        """Whether asyncio tasks made by earlier executions are still to finish."""
        if self.loop is None or self.loop.is_closed():
            return False
        import asyncio
        return any(not task.done() for task in asyncio.all_tasks(self.loop))

    def idle(self):
        """The next message, while the event loop runs the tasks earlier executions left: they keep
        running between executions, as in a notebook. A helper thread waits for the message; a
        SIGINT meanwhile is dropped, as an idle wait drops it (it was meant for an execution that
        has ended)."""
        import asyncio
        import threading
        loop = self.loop
        arrived = loop.create_future()

        def deliver(outcome):
            if not arrived.done():
                (arrived.set_exception if isinstance(outcome, BaseException) else arrived.set_result)(outcome)

        def wait():
            try:
                msg = frames.recv()
            except BaseException as exc:  # noqa: BLE001 (handed to the main thread)
                msg = exc
            loop.call_soon_threadsafe(deliver, msg)

        threading.Thread(target=wait, name="capsule-idle-reader", daemon=True).start()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(arrived)
        finally:
            frames.drop_pending()

    def _run_cell(self, body, expr):
        """Body first, then the trailing expression, evaluated exactly once; returns (value, repr).
        When either part awaits, both run inside the event loop, so the body's code sees a running
        loop too (asyncio.create_task in the body of a cell that ends in an await)."""
        if (body.co_flags | (0 if expr is None else expr.co_flags)) & CO_COROUTINE:
            value = self._await(self._run_in_loop(body, expr))
        else:
            eval(body, self.ns)
            value = eval(expr, self.ns) if expr is not None else None
        return value, None if value is None else repr(value)

    async def _run_in_loop(self, body, expr):
        ran = eval(body, self.ns)
        if body.co_flags & CO_COROUTINE:
            await ran
        if expr is None:
            return None
        value = eval(expr, self.ns)
        return await value if expr.co_flags & CO_COROUTINE else value

    def _await(self, coro):
        import asyncio  # ~25 ms, so only for cells that use top-level await
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)  # again each time: a user asyncio.run() unsets it
        task = self.loop.create_task(coro)
        try:
            return self.loop.run_until_complete(task)
        finally:
            if not task.done():  # interrupted while the loop waited: cancel so the cell's finally blocks run
                task.cancel()
                try:
                    self.loop.run_until_complete(task)
                except BaseException:
                    pass


_THREAD_POOLS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_MAX_THREADS")


def _limit_thread_pools():
    """numpy's OpenBLAS, OpenMP and MKL start a thread per core of the host at import, and every
    thread counts against max_processes (RLIMIT_NPROC): on a large host `import numpy` would fail.
    Unless the policy's env says otherwise, they get the cores the session may use, at most a
    quarter of its process allowance: in the C environment those libraries read (putenv), not in
    os.environ, which stays exactly the policy's."""
    import resource
    cores = len(os.sched_getaffinity(0))
    allowance = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    count = cores if allowance == resource.RLIM_INFINITY else max(1, min(cores, allowance // 4))
    for name in _THREAD_POOLS:
        if name not in os.environ:
            os.putenv(name, str(count))


def _add_site_directories():
    """The .pth files of the directories on sys.path after the standard library (an environment's
    packages, the policy's python_path), read as site.addsitedir reads them: the interpreter runs
    without `site`, and some packages rely on them. Only directories that have one pay for it."""
    import posix
    end = sys.path.index("/workspace") if "/workspace" in sys.path else len(sys.path)
    for directory in sys.path[3:end]:  # after /usr/lib/capsule, the stdlib and lib-dynload (python.c)
        try:
            names = posix.listdir(directory)
        except OSError:
            continue
        if any(name.endswith(".pth") for name in names):
            import site  # without running site.main(): the interpreter's no_site flag is set
            site.addsitedir(directory)


class _Helper:
    """help() as site.py gives it (the embedded interpreter runs without site)."""

    def __repr__(self):
        return "Type help() for interactive help, or help(object) for help about object."

    def __call__(self, *args, **kwds):
        import pydoc
        return pydoc.help(*args, **kwds)


class _Quitter:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Use {self.name}() to exit"

    def __call__(self, code=None):
        raise SystemExit(code)


def _install_site_builtins():
    """help, exit and quit, which ordinary code expects and site.py would have added."""
    for name, value in (("help", _Helper()), ("exit", _Quitter("exit")), ("quit", _Quitter("quit"))):
        if not hasattr(builtins, name):
            setattr(builtins, name, value)


def _put_script_directory_first(filename):
    """sys.path[0] is a script's directory, as CPython makes it, when the supervisor showed it
    (the script's absolute path names it, and it is there inside: see ScriptFiles)."""
    import posix
    directory = filename.rpartition("/")[0] or "/"
    if not filename.startswith("/") or sys.path[:1] == [directory]:
        return
    try:
        posix.stat(filename)
    except OSError:
        return
    sys.path.insert(0, directory)


def _compile(source, filename, want_result):
    """(body, trailing expression or None) code objects; top-level await allowed."""
    if not want_result:
        return compile(source, filename, "exec", TOP_LEVEL_AWAIT, dont_inherit=True), None
    import _ast  # the C half of `ast`: 0.5 ms instead of 5
    tree = compile(source, filename, "exec", ONLY_AST | TOP_LEVEL_AWAIT, dont_inherit=True)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], _ast.Expr) else None
    body = compile(tree, filename, "exec", TOP_LEVEL_AWAIT, dont_inherit=True)
    if last is None:
        return body, None
    return body, compile(_ast.Expression(last.value), filename, "eval", TOP_LEVEL_AWAIT, dont_inherit=True)


UTF8_BOM = b"\xef\xbb\xbf"


def _script_source(data, filename):
    """A script file's source as CPython reads a script: UTF-8, unless a UTF-8 byte order mark or a
    PEP 263 coding line says otherwise, and then the bytes themselves, for compile() to decode
    exactly as CPython does (or refuse, as CPython does)."""
    second_line_end = data.find(b"\n", data.find(b"\n") + 1)  # the coding line is on line 1 or 2
    if data.startswith(UTF8_BOM) or b"coding" in (data if second_line_end < 0 else data[:second_line_end]):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # CPython's own words for this case
        line = data.count(b"\n", 0, exc.start) + 1
        raise SyntaxError(f"Non-UTF-8 code starting with '\\x{data[exc.start]:02x}' in file {filename} on line {line}, "
                          "but no encoding declared; see https://peps.python.org/pep-0263/ for details") from None


def _exit_code(code):
    """sys.exit() semantics: None -> 0, int -> itself, anything else is printed to stderr -> 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        # As CPython's own exit: a code that does not fit a C int becomes -1 (255 to the shell).
        return int(code) if -(1 << 31) <= code < (1 << 31) else -1
    try:
        streams.stderr.write(f"{code}\n")
    except Exception:
        pass
    return 1


def _error_frame(exc, rid, cells):
    kind = type(exc)
    ename = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        evalue = frames.clip(str(exc), ERROR_TEXT_BUDGET // 2)
    except Exception:
        evalue = f"<unprintable {ename} object>"
    try:
        import traceback
        _strip_worker_frames(exc, cells)
        sys.last_type, sys.last_value, sys.last_traceback = kind, exc, exc.__traceback__  # for pdb.pm()
        lines = "".join(traceback.format_exception(exc)).split("\n")
        tb = _fit([line + "\n" for line in lines[:-1]] + ([lines[-1] + "\n"] if lines[-1] else []), ERROR_TEXT_BUDGET)
    except Exception:  # e.g. MemoryError again: CPython's last line still says what was raised
        tb = [f"{ename}: {evalue}\n" if evalue else f"{ename}\n"]
    return {"type": "error", "id": rid, "ename": frames.clip(ename, 1024), "evalue": evalue, "traceback": tb}


# An error frame carries at most this many characters of traceback (and half as many of message),
# so it fits the smallest frame limit a policy may set (8 MiB) even when every character needs a
# six-byte JSON escape.
ERROR_TEXT_BUDGET = 512 << 10


# ... and at most this many lines (the supervisor reads at most 65536 JSON values a frame).
ERROR_LINES_BUDGET = 4096


def _fit(lines, budget):
    """The first and last lines of a traceback within budget characters and ERROR_LINES_BUDGET
    lines; the end matters most."""
    if sum(map(len, lines)) <= budget and len(lines) <= ERROR_LINES_BUDGET:
        return lines
    head, tail, used = [], [], 0
    for line in lines:
        if used + len(line) > budget // 4 or len(head) >= ERROR_LINES_BUDGET // 4:
            break
        head.append(line)
        used += len(line)
    for line in reversed(lines[len(head):]):
        if used + len(line) > budget or len(head) + len(tail) >= ERROR_LINES_BUDGET - 1:
            break
        tail.append(line)
        used += len(line)
    if not tail:  # the last line alone is over budget: its start names the exception
        tail = [frames.clip(lines[-1].removesuffix("\n"), budget - used)]
    omitted = len(lines) - len(head) - len(tail)
    return head + ([frames.truncated(omitted, "lines") + "\n"] if omitted else []) + tail[::-1]


def _send_or(make_msg, fallback, rid):
    """Flush output and send make_msg(); if memory is exhausted, the fallback frame for execution
    rid instead, made once the ballast is released (a few small objects)."""
    try:
        try:
            streams.flush()
        finally:
            frames.send(make_msg())
    except MemoryError:
        _ballast.clear()
        frames.write(_oom_frame(fallback, rid))
    if not _ballast:
        try:
            _ballast.append(bytes(1 << 21))
        except MemoryError:
            pass


def _oom_template(msg):
    """A frame's JSON cut where its id goes (the id's value is the "@" placeholder)."""
    head, _, tail = frames.encode(msg)[4:].partition(b'"@"')
    return head, tail


# What an execution sends when memory ran out as it ended: made from these at that moment, not
# encoded ahead on every execution.
_OOM_ERROR = _oom_template({"type": "error", "id": "@", "ename": "MemoryError", "evalue": "", "traceback": ["MemoryError\n"]})
_OOM_DONE = _oom_template({"type": "done", "id": "@", "status": "error", "duration": 0.0})


def _oom_frame(template, rid):
    body = template[0] + frames.encode(rid)[4:] + template[1]
    return len(body).to_bytes(4, "big") + body


def _strip_worker_frames(exc, cells):
    """Leave only user frames in exc's traceback and in every exception chained to it."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = _user_traceback(e.__traceback__, cells)
        todo += (e.__cause__, e.__context__, *(e.exceptions if isinstance(e, BaseExceptionGroup) else ()))


def _user_traceback(tb, cells):
    """Drop everything before the cell's own frame (worker, asyncio) and any capsule_worker frame."""
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    start = next((i for i, t in enumerate(entries) if any(t.tb_frame.f_code is c for c in cells)), 0)
    result = None
    for t in reversed(entries[start:]):
        if str(t.tb_frame.f_globals.get("__name__")).partition(".")[0] != __package__:
            result = type(t)(result, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return result


def _remember(filename, source):
    """Make the cell's source visible to linecache (tracebacks, inspect.getsource, warnings)."""
    if isinstance(source, bytes):  # a script with a BOM or coding line: decoded as compile() will
        import tokenize
        try:
            source = source.decode(tokenize.detect_encoding(io.BytesIO(source).readline)[0])
        except (SyntaxError, LookupError, UnicodeDecodeError):
            return  # compile() says what is wrong with it
    lines = io.StringIO(source, newline=None).readlines()  # the compiler's line breaks: \n, \r\n, \r
    _sources[filename] = (len(source), None, lines, filename)  # mtime None: checkcache() keeps it
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        linecache.cache.update(_sources)  # also restores entries a linecache.clearcache() dropped


def _seed_linecache(linecache):
    linecache.cache.update(_sources)


class _AfterImport:
    """Meta-path finder that runs a function on a module right after it first loads: seeding
    linecache with our sources when user code imports it (importing it ourselves would cost ~5 ms on
    every session: it pulls in tokenize and re), quieting multiprocessing's resource tracker."""

    hooks = {}  # module name -> function(module); the finder leaves sys.meta_path once all have run

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        hook = cls.hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if finder is not cls and find else None
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module  # a source loader of this module alone, so it can be wrapped

        def run_hook(module):
            exec_module(module)
            if cls.hooks.pop(name, None) is not None:
                hook(module)
            if not cls.hooks and cls in sys.meta_path:
                sys.meta_path.remove(cls)
        spec.loader.exec_module = run_hook
        return spec
