"""End-to-end tests: start the worker in a subprocess and speak docs/protocol.md to it over fd 3.

Run from the repository root: /usr/bin/python3.11 -m unittest discover -s worker/tests -t worker
"""
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

WORKER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else sys.executable
TIMEOUT = 20


class Worker:
    """One worker process plus the supervisor's end of its socket."""

    def __init__(self, stderr=None):
        self.sock, child = socket.socketpair()
        boot = (f"import os, sys; os.dup2({child.fileno()}, 3); sys.path.insert(0, {WORKER_DIR!r}); "
                "import capsule_worker.main as m; m.serve(3)")
        started = time.perf_counter()
        self.proc = subprocess.Popen([PYTHON, "-I", "-S", "-c", boot], pass_fds=[child.fileno()],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        child.close()
        self.sock.settimeout(TIMEOUT)
        self.ready = self.recv()
        self.startup = time.perf_counter() - started
        self.count = 0

    def send(self, msg):
        data = json.dumps(msg).encode()
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("worker closed the socket")
            buf += chunk
        return buf

    def recv(self):
        (size,) = struct.unpack(">I", self._exact(4))
        return json.loads(self._exact(size).decode("utf-8"))

    def execute(self, code, result=True, filename=None, argv=None):
        self.count += 1
        rid = f"r{self.count}"
        filename = filename or f"<cell-{self.count}>"
        self.send({"type": "execute", "id": rid, "code": code, "filename": filename,
                   "argv": argv if argv is not None else [filename], "result": result})
        return rid

    def collect(self, rid):
        """Frames until (and including) done; input requests are not answered here."""
        out = []
        while True:
            msg = self.recv()
            out.append(msg)
            if msg["type"] == "done":
                assert msg["id"] == rid, msg
                return out

    def run(self, code, **kw):
        return Run(self.collect(self.execute(code, **kw)))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sock.close()


class Run:
    """The frames of one execution, with convenient views."""

    def __init__(self, msgs):
        self.msgs = msgs
        self.done = msgs[-1]
        self.stdout_bytes = b"".join(_stream_bytes(m) for m in msgs if m["type"] == "stream" and m["name"] == "stdout")
        self.stderr_bytes = b"".join(_stream_bytes(m) for m in msgs if m["type"] == "stream" and m["name"] == "stderr")
        self.stdout = self.stdout_bytes.decode("utf-8", "replace")
        self.stderr = self.stderr_bytes.decode("utf-8", "replace")
        self.results = [m["data"]["text/plain"] for m in msgs if m["type"] == "result"]
        errors = [m for m in msgs if m["type"] == "error"]
        self.error = errors[0] if errors else None
        self.types = [m["type"] for m in msgs]


def _stream_bytes(msg):
    """A stream frame's output: `text`, or base64 `data` (docs/protocol.md), never both."""
    assert ("text" in msg) != ("data" in msg), msg
    return msg["text"].encode() if "text" in msg else base64.b64decode(msg["data"], validate=True)


class WorkerTest(unittest.TestCase):
    def setUp(self):
        self.w = Worker()

    def tearDown(self):
        self.w.close()

    def assertOk(self, run):
        self.assertEqual(run.done["status"], "ok", run.msgs)
        self.assertIsNone(run.error)

    def test_preload_imports_quietly_and_names_what_failed(self):
        self.w.send({"type": "preload", "modules": ["this", "no_such_mod", "json.decoder", 3]})
        answer = self.w.recv()
        self.assertEqual(answer["type"], "preloaded")
        self.assertEqual(sorted(answer["skipped"]), ["3", "no_such_mod"])
        self.assertEqual(answer["skipped"]["no_such_mod"], "ModuleNotFoundError: No module named 'no_such_mod'")
        run = self.w.run("import sys\nprint('this' in sys.modules, 'json.decoder' in sys.modules)", result=False)
        self.assertOk(run)
        self.assertEqual(run.stdout, "True True\n")  # and nothing of the Zen that `this` printed

    def test_ready_and_startup_time(self):
        self.assertEqual(self.w.ready["type"], "ready")
        self.assertEqual(self.w.ready["pid"], self.w.proc.pid)
        self.assertEqual(self.w.ready["python"], "%d.%d.%d" % sys.version_info[:3])
        times = [self.w.startup] + [_timed_startup() for _ in range(4)]
        print(f"\n  spawn-to-ready: best {min(times) * 1000:.1f} ms, runs "
              + ", ".join(f"{t * 1000:.1f}" for t in times), file=sys.stderr)

    def test_hello_world(self):
        run = self.w.run("print('hello, world')")
        self.assertOk(run)
        self.assertEqual(run.stdout, "hello, world\n")
        self.assertEqual(run.types, ["stream", "done"])
        self.assertIsInstance(run.done["duration"], float)
        self.assertNotIn("exit_code", run.done)

    def test_trailing_expression_evaluated_once(self):
        self.assertOk(self.w.run("n = 0\ndef bump():\n    global n\n    n += 1\n    return n"))
        run = self.w.run("print('before')\nbump()")
        self.assertOk(run)
        self.assertEqual(run.types, ["stream", "result", "done"])  # output before result
        self.assertEqual(run.results, ["1"])
        self.assertEqual(self.w.run("n").results, ["1"])

    def test_a_rich_result_carries_its_html_beside_its_text(self):
        run = self.w.run("class Table:\n    def _repr_html_(self):\n        return '<table></table>'\n"
                         "    def __repr__(self):\n        return 'Table()'\nTable()")
        data = [m["data"] for m in run.msgs if m["type"] == "result"]
        self.assertEqual(data, [{"text/html": "<table></table>", "text/plain": "Table()"}])
        # A rich method that fails leaves the repr, with a note; the execution still succeeds.
        run = self.w.run("class Bad:\n    def _repr_html_(self):\n        raise ValueError('no html')\nBad()")
        self.assertOk(run)
        self.assertEqual([list(m["data"]) for m in run.msgs if m["type"] == "result"], [["text/plain"]])
        self.assertIn("Bad's rich display failed (ValueError: no html); showing its repr", run.stderr)

    def test_result_suppressed_and_none(self):
        run = self.w.run("40 + 2", result=False)
        self.assertEqual(run.types, ["done"])
        self.assertEqual(self.w.run("None").types, ["done"])
        self.assertEqual(self.w.run("x = 5").types, ["done"])
        self.assertEqual(self.w.run("'a' * 3").results, ["'aaa'"])

    def test_underscore_history(self):
        for code in ("1", "2", "None", "3"):
            self.w.run(code)
        self.assertEqual(self.w.run("(_, __, ___)").results, ["(3, 2, 1)"])

    def test_in_and_out(self):
        w = Worker()
        try:
            w.run("6 * 7")
            w.run("x = 1")
            w.run("'text'")
            self.assertEqual(w.run("In[1], In[2], Out[1], Out[3], 2 in Out, len(In)").results,
                             ["('6 * 7', 'x = 1', 42, 'text', False, 5)"])
            # Rebinding or deleting the names breaks nothing; a deleted name comes back.
            self.assertOk(w.run("In = 5\ndel Out"))
            self.assertEqual(w.run("In, sorted(Out)").results, ["(5, [1, 3, 4])"])
        finally:
            w.close()
        # Code run without a result (a script) gets neither: it runs as under python3.
        w = Worker()
        try:
            self.assertEqual(w.run("print('In' in globals(), 'Out' in globals())", result=False).stdout, "False False\n")
        finally:
            w.close()

    def test_namespace_persists_and_is_main(self):
        self.w.run("import sys\nclass Point:\n    pass\np = Point()", filename="defs.py", argv=["defs.py", "-v"])
        run = self.w.run("print(__name__, __file__, sys.argv, type(p).__module__)\n"
                         "import __main__; __main__.p is p", filename="use.py", argv=["use.py", "x"])
        self.assertOk(run)
        self.assertEqual(run.stdout, "__main__ use.py ['use.py', 'x'] __main__\n")
        self.assertEqual(run.results, ["True"])
        self.assertNotIn("capsule_worker", self.w.run("sorted(k for k in dir() if not k.startswith('__'))").results[0])

    def test_exception_traceback_has_only_user_frames(self):
        self.w.run("def helper(x):\n    return 1 / x\n", filename="lib.py")
        run = self.w.run("a = 1\n\nhelper(0)\n", filename="main.py")
        self.assertEqual(run.done["status"], "error")
        self.assertEqual(run.types, ["error", "done"])
        err = run.error
        self.assertEqual((err["ename"], err["evalue"]), ("ZeroDivisionError", "division by zero"))
        tb = err["traceback"]
        self.assertTrue(all(line.endswith("\n") and line.count("\n") == 1 for line in tb), tb)
        self.assertNotIn("capsule_worker", "".join(tb))
        self.assertEqual(tb[0], "Traceback (most recent call last):\n")
        self.assertIn('  File "main.py", line 3, in <module>\n', tb)
        self.assertIn("    helper(0)\n", tb)
        self.assertIn('  File "lib.py", line 2, in helper\n', tb)
        self.assertIn("    return 1 / x\n", tb)
        self.assertEqual(tb[-1], "ZeroDivisionError: division by zero\n")
        self.assertOk(self.w.run("a"))  # the body before the error ran; the session goes on
        tb = self.w.run("a = 1\n1 / 0", filename="expr.py").error["traceback"]
        self.assertEqual(tb[1:3], ['  File "expr.py", line 2, in <module>\n', "    1 / 0\n"])

    def test_output_flushed_before_error_and_chained_names(self):
        run = self.w.run("import sys\nprint('partial', end='')\nsys.stderr.write('warn')\n"
                         "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('bad') from e")
        self.assertEqual(run.types, ["stream", "stream", "error", "done"])
        self.assertEqual((run.stdout, run.stderr), ("partial", "warn"))
        self.assertEqual(run.error["ename"], "ValueError")
        tb = "".join(run.error["traceback"])
        self.assertIn("KeyError: 'k'", tb)
        self.assertIn("direct cause", tb)
        self.assertNotIn("capsule_worker", tb)
        run = self.w.run("import json\njson.loads('{')")
        self.assertEqual(run.error["ename"], "json.decoder.JSONDecodeError")

    def run_script(self, data, filename):
        self.w.count += 1
        rid = f"r{self.w.count}"
        self.w.send({"type": "execute", "id": rid, "source": base64.b64encode(data).decode(), "filename": filename,
                     "argv": [filename], "result": False})
        return Run(self.w.collect(rid))

    def test_script_encodings_as_cpython_reads_them(self):
        samples = {
            "latin1.py": b"# -*- coding: latin-1 -*-\nx = '\xe9'\nprint(x, len(x), ascii(x))\n",
            "second_line.py": b"#!/usr/bin/env python3\n# vim: set fileencoding=cp1252 :\nprint(ascii('\x80'))\n",
            "bom.py": b"\xef\xbb\xbfprint('bom', ascii('\xc3\xa9'))\n",
            "bom_utf8_cookie.py": b"\xef\xbb\xbf# coding: utf-8\nprint('ok')\n",
            "cookie_late.py": b"x = 1\nprint(ascii('\xc3\xa9'))  # coding: latin-1\n",  # not line 1 or 2
            "not_a_cookie.py": b"print('decoding \xc3\xa9')\n",
        }
        with tempfile.TemporaryDirectory() as scratch:
            for name, data in samples.items():
                with self.subTest(name=name):
                    path = os.path.join(scratch, name)
                    with open(path, "wb") as f:
                        f.write(data)
                    cpython = subprocess.run([PYTHON, "-I", "-S", path], capture_output=True, timeout=TIMEOUT)
                    self.assertEqual(cpython.returncode, 0, cpython.stderr)
                    run = self.run_script(data, name)
                    self.assertOk(run)
                    self.assertEqual(run.stdout_bytes, cpython.stdout)

    def test_script_encodings_cpython_refuses(self):
        run = self.run_script(b"x = '\xe9'\nprint(x)\n", "lat.py")
        self.assertEqual(run.error["ename"], "SyntaxError")
        self.assertEqual(run.error["traceback"], [  # what `python3 lat.py` prints
            "SyntaxError: Non-UTF-8 code starting with '\\xe9' in file lat.py on line 1, but no encoding declared; "
            "see https://peps.python.org/pep-0263/ for details\n"])
        for data, message in ((b"# coding: no-such-codec\nprint(1)\n", "unknown encoding: no-such-codec"),
                              (b"\xef\xbb\xbf# coding: latin-1\nprint(1)\n", "encoding problem: iso-8859-1 with BOM")):
            with self.subTest(message=message):
                run = self.run_script(data, "bad.py")
                self.assertEqual(run.error["ename"], "SyntaxError")
                self.assertEqual(run.error["traceback"][-1], f"SyntaxError: {message}\n")
        run = self.run_script(b"# coding: latin-1\nx = '\xe9'\n1 / 0\n", "tb.py")  # its lines, decoded, in the traceback
        self.assertIn("    1 / 0\n", run.error["traceback"])
        self.assertOk(self.w.run("1"))

    def test_syntax_error(self):
        run = self.w.run("x = 1\nif x\n    pass\n", filename="bad.py")
        self.assertEqual(run.done["status"], "error")
        err = run.error
        self.assertEqual(err["ename"], "SyntaxError")
        tb = "".join(err["traceback"])
        self.assertNotIn("capsule_worker", tb)
        self.assertNotIn("Traceback", tb)
        self.assertIn('File "bad.py", line 2', tb)
        self.assertIn("    if x\n", tb)
        self.assertIn("^", tb)
        self.assertEqual(self.w.run("x = 1\nx", result=True).results, ["1"])  # nothing of bad.py ran

    def test_sys_exit(self):
        for code, exit_code, status in (("sys.exit(3)", 3, "error"), ("sys.exit()", 0, "ok"),
                                        ("sys.exit(None)", 0, "ok"), ("sys.exit(0)", 0, "ok"),
                                        ("raise SystemExit(True)", 1, "error")):
            run = self.w.run("import sys\nprint('x')\n" + code)
            self.assertEqual((run.done["status"], run.done["exit_code"]), (status, exit_code), code)
            self.assertIsNone(run.error)
            self.assertEqual(run.stdout, "x\n")
        run = self.w.run("import sys; sys.exit('fatal: no input')")
        self.assertEqual((run.done["status"], run.done["exit_code"]), ("error", 1))
        self.assertEqual(run.stderr, "fatal: no input\n")
        self.assertOk(self.w.run("1"))  # still alive

    def test_top_level_await_and_persistent_loop(self):
        run = self.w.run("import asyncio\nasync def later():\n    await asyncio.sleep(0.05)\n    return 42\n"
                         "task = asyncio.create_task(later())\nawait asyncio.sleep(0)\ntask.done()")
        self.assertOk(run)
        self.assertEqual(run.results, ["False"])
        run = self.w.run("await task")
        self.assertOk(run)
        self.assertEqual(run.results, ["42"])
        run = self.w.run("async def boom():\n    raise RuntimeError('async')\nawait boom()")
        self.assertEqual(run.error["ename"], "RuntimeError")
        tb = "".join(run.error["traceback"])
        self.assertNotIn("asyncio", tb)
        self.assertNotIn("capsule_worker", tb)
        self.assertIn("await boom()", tb)
        # A user's asyncio.run() unsets the event loop; the session's loop still serves the next cell.
        self.assertOk(self.w.run("asyncio.run(asyncio.sleep(0))"))
        self.assertOk(self.w.run("await asyncio.sleep(0)"))
        # A cell that awaits runs whole inside the loop, as one coroutine (CPython's compile of the
        # cell, and IPython, do the same): its first lines see a running loop too.
        run = self.w.run("t = asyncio.create_task(later())\nawait t")
        self.assertOk(run)
        self.assertEqual(run.results, ["42"])

    def test_input_round_trip_and_eof(self):
        w = self.w
        rid = w.execute("name = input('Who? ')\nline = __import__('sys').stdin.readline()\n"
                        "print('hi', name, repr(line))\ninput()")
        self.assertEqual(w.recv(), {"type": "input_request", "id": rid, "prompt": "Who? ", "password": False})
        w.send({"type": "input_reply", "id": rid, "value": "Ada"})
        self.assertEqual(w.recv()["prompt"], "")
        w.send({"type": "input_reply", "id": "stale", "value": "ignored"})
        w.send({"type": "input_reply", "id": rid, "value": "second"})
        self.assertEqual(w.recv()["text"], "hi Ada 'second\\n'\n")
        self.assertEqual(w.recv()["type"], "input_request")
        w.send({"type": "input_reply", "id": rid, "eof": True})
        run = Run(w.collect(rid))
        self.assertEqual(run.error["ename"], "EOFError")
        w.send({"type": "input_reply", "id": rid, "value": "late"})  # while idle: dropped
        self.assertOk(w.run("1"))

    def test_input_flushes_pending_output(self):
        rid = self.w.execute("print('no newline', end='')\ninput('> ')")
        self.assertEqual(self.w.recv()["text"], "no newline")
        self.assertEqual(self.w.recv()["type"], "input_request")
        self.w.send({"type": "input_reply", "id": rid, "value": "v"})
        self.assertEqual(Run(self.w.collect(rid)).results, ["'v'"])

    def test_sigint_interrupts_and_session_survives(self):
        w = self.w
        rid = w.execute("import time\ntry:\n    print('started')\n    while True:\n        pass\n"
                        "finally:\n    print('cleanup')")
        self.assertEqual(w.recv()["text"], "started\n")
        os.kill(w.proc.pid, signal.SIGINT)
        run = Run(w.collect(rid))
        self.assertEqual(run.done["status"], "interrupted")
        self.assertEqual(run.error["ename"], "KeyboardInterrupt")
        self.assertEqual(run.stdout, "cleanup\n")
        self.assertNotIn("capsule_worker", "".join(run.error["traceback"]))
        os.kill(w.proc.pid, signal.SIGINT)  # while idle: ignored
        time.sleep(0.1)
        self.assertOk(w.run("1 + 1"))

    def test_sigint_while_waiting_for_input(self):
        rid = self.w.execute("input('? ')")
        self.assertEqual(self.w.recv()["type"], "input_request")
        os.kill(self.w.proc.pid, signal.SIGINT)
        run = Run(self.w.collect(rid))
        self.assertEqual(run.done["status"], "interrupted")
        self.assertOk(self.w.run("2"))

    def test_sigint_storm_during_output_keeps_frames_intact(self):
        rid = self.w.execute("i = 0\nwhile True:\n    print('x' * 5000, i)\n    i += 1")
        self.w.recv()
        for _ in range(50):
            os.kill(self.w.proc.pid, signal.SIGINT)
            time.sleep(0.002)
        run = Run(self.w.collect(rid))  # every frame decoded: none was cut in half
        self.assertEqual(run.done["status"], "interrupted")
        self.assertEqual(self.w.run("'alive'").results, ["'alive'"])

    def test_sigint_during_await(self):
        w = self.w
        w.run("import asyncio")
        rid = w.execute("try:\n    print('waiting')\n    await asyncio.sleep(60)\nfinally:\n    print('cancelled')")
        self.assertEqual(w.recv()["text"], "waiting\n")
        os.kill(w.proc.pid, signal.SIGINT)
        run = Run(w.collect(rid))
        self.assertEqual((run.done["status"], run.error["ename"]), ("interrupted", "KeyboardInterrupt"))
        self.assertEqual(run.stdout, "cancelled\n")
        self.assertEqual(w.run("await asyncio.sleep(0, result='again')").results, ["'again'"])

    def test_threads_and_signal_handlers_printing_keep_frames_intact(self):
        run = self.w.run(
            "import signal, threading, time\n"
            "signal.signal(signal.SIGALRM, lambda *a: print('#'))\n"
            "signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\n"
            "def spam():\n    for i in range(300):\n        print('t' * 3000)\n"
            "threads = [threading.Thread(target=spam) for _ in range(3)]\n"
            "for t in threads: t.start()\n"
            "end = time.time() + 0.3\n"
            "while time.time() < end:\n    print('m' * 70000)\n"
            "for t in threads: t.join()\n"
            "signal.setitimer(signal.ITIMER_REAL, 0)")
        self.assertOk(run)
        self.assertEqual(run.stdout.count("t"), 900 * 3000)  # lines may interleave (as in CPython), text is never lost
        self.assertEqual(run.stdout.count("m") % 70000, 0)
        self.assertGreater(run.stdout.count("#"), 0)

    def test_big_print_is_chunked(self):
        run = self.w.run("print('x' * 10_000_000)\nprint('é' * 100_000)")
        self.assertOk(run)
        chunks = [m["text"] for m in run.msgs if m["type"] == "stream"]
        self.assertTrue(all(len(c.encode()) <= 64 * 1024 for c in chunks))
        self.assertEqual(run.stdout, "x" * 10_000_000 + "\n" + "é" * 100_000 + "\n")
        self.assertGreater(len(chunks), 150)

    def test_stream_objects(self):
        run = self.w.run("import sys, io\n"
                         "print(sys.stdout.isatty(), sys.stdout.encoding, sys.stdout.writable(), sys.stdout.name)\n"
                         "print(sys.stdout.fileno(), sys.stderr.fileno(), sys.stdin.fileno(), sys.stdout.buffer.fileno())\n"
                         "sys.stdout.write(b'bytes')")
        self.assertEqual(run.stdout, "False utf-8 True <stdout>\n1 2 0 1\n")
        self.assertEqual(run.error["ename"], "TypeError")
        self.assertNotIn("capsule_worker", "".join(run.error["traceback"]))

    def test_binary_output_byte_for_byte(self):
        run = self.w.run("import sys, io, os\n"
                         "print('text', end='')\n"
                         "sys.stdout.buffer.write(b'\\xff\\xfe raw\\n')\n"
                         "sys.stdout.buffer.write(memoryview(b'caf\\xc3\\xa9\\n'))\n"
                         "latin = io.TextIOWrapper(sys.stdout.buffer, encoding='latin-1', write_through=True)\n"
                         "latin.write('\\xe9\\n')\n"
                         "del latin\n"  # collected: closes its buffer, which must keep working
                         "print(os.fsdecode(b'name-\\xff'))\n"
                         "sys.stderr.buffer.write(b'err\\n')\n"
                         "sys.stdout = io.TextIOWrapper(sys.stdout.detach(), encoding='utf-8', line_buffering=True)\n"
                         "print('after detach')")
        self.assertOk(run)
        self.assertEqual(run.stdout_bytes, b"text\xff\xfe raw\ncaf\xc3\xa9\n\xe9\nname-\xff\nafter detach\n")
        self.assertEqual(run.stderr, "err\n")
        streams = [m for m in run.msgs if m["type"] == "stream"]
        self.assertIn({"type": "stream", "id": run.done["id"], "name": "stdout", "text": "caf\xe9\n"}, streams)

    def test_binary_stdin(self):
        w = self.w
        rid = w.execute("import sys\nfirst = sys.stdin.buffer.readline()\nsecond = sys.stdin.readline()\n"
                        "rest = sys.stdin.buffer.read()\nprint(repr(first), repr(second), repr(rest))")
        for value in ("caf\xe9", "two", "three"):
            self.assertEqual(w.recv()["type"], "input_request")
            w.send({"type": "input_reply", "id": rid, "value": value})
        self.assertEqual(w.recv()["type"], "input_request")
        w.send({"type": "input_reply", "id": rid, "eof": True})
        run = Run(w.collect(rid))
        self.assertOk(run)
        self.assertEqual(run.stdout, "b'caf\\xc3\\xa9\\n' 'two\\n' b'three\\n'\n")

    def test_stdout_stderr_order(self):
        run = self.w.run("import sys\nprint('a', end='')\nprint('b', end='', file=sys.stderr)\nprint('c')")
        self.assertEqual([(m["name"], m["text"]) for m in run.msgs if m["type"] == "stream"],
                         [("stdout", "a"), ("stderr", "b"), ("stdout", "c\n")])

    def test_inspect_getsource_in_first_cell(self):
        run = self.w.run("import inspect\ndef f():\n    return 1\nprint(inspect.getsource(f), end='')")
        self.assertOk(run)
        self.assertEqual(run.stdout, "def f():\n    return 1\n")

    def test_memory_error_when_memory_is_exhausted(self):
        self.assertOk(self.w.run(
            "import resource\nsize = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            "resource.setrlimit(resource.RLIMIT_AS, (size + (64 << 20), resource.RLIM_INFINITY))"))
        run = self.w.run("hog = []\nwhile True:\n    hog.append(bytearray(1 << 16))")
        self.assertEqual(run.done["status"], "error")
        self.assertEqual(run.error["ename"], "MemoryError")
        self.assertOk(self.w.run("del hog"))
        self.assertEqual(self.w.run("sum(range(10))").results, ["45"])

    def test_memory_running_out_as_an_execution_ends_still_ends_it(self):
        # The first `error` and `done` frames fail as if memory had run out: the stand-ins made
        # after the ballast is released go instead, with the execution's id.
        fail_next = ("import capsule_worker.frames as frames\n"
                     "real, failed = frames.send, set()\n"
                     "def send(msg):\n"
                     "    if msg['type'] in ('error', 'done') and msg['type'] not in failed:\n"
                     "        failed.add(msg['type'])\n"
                     "        raise MemoryError\n"
                     "    real(msg)\n"
                     "frames.send = send\n")
        run = self.w.run(fail_next + "raise ValueError('lost')")
        self.assertEqual((run.error["ename"], run.error["traceback"]), ("MemoryError", ["MemoryError\n"]))
        self.assertEqual((run.done["status"], run.done["duration"]), ("error", 0.0))
        self.assertEqual(run.error["id"], run.done["id"])
        self.assertEqual(self.w.run("frames.send = real\nsum(range(10))").results, ["45"])

    def test_programs_cannot_start_and_say_why(self):
        why = "capsule: programs cannot be started inside the sandbox (execve is not allowed)"
        for code, program in (("import subprocess\nsubprocess.run(['echo', 'hi'])", "'echo'"),
                              ("import os\nos.execv('/bin/true', ['true'])", "'/bin/true'"),
                              ("import os\nos.posix_spawn('/bin/true', ['true'], {})", "'/bin/true'")):
            with self.subTest(code=code):
                run = self.w.run(code)
                self.assertEqual(run.error["ename"], "PermissionError")
                self.assertTrue(run.error["evalue"].startswith(f"[Errno 1] {why}; "), run.error["evalue"])
                self.assertTrue(run.error["evalue"].endswith(program), run.error["evalue"])
        run = self.w.run("import multiprocessing\nmultiprocessing.get_context('spawn').Process(target=print).start()")
        self.assertEqual(run.error["ename"], "PermissionError")
        self.assertIn("use the 'fork' start method", run.error["evalue"])
        run = self.w.run("import os\nos.system('exit 3') >> 8", result=True)  # outside the sandbox it runs
        self.assertEqual(run.stderr, f"{why}: os.system('exit 3') returns exit status 127 (32512) without running "
                                     "anything; do the work in Python (os.fork() and multiprocessing's 'fork' start "
                                     "method work), or let the policy start Python itself with [sandbox] "
                                     "python_subprocess = true\n")

    def test_shared_memory_without_the_resource_tracker(self):
        run = self.w.run("from multiprocessing import shared_memory\n"
                         "s = shared_memory.SharedMemory(create=True, size=8)\ns.buf[0] = 7\n"
                         "t = shared_memory.SharedMemory(s.name)\nprint(t.buf[0])\nt.close(); s.close(); s.unlink()")
        self.assertOk(run)
        self.assertEqual((run.stdout, run.stderr), ("7\n", ""))

    def test_shutdown(self):
        self.w.send({"type": "shutdown"})
        self.assertEqual(self.w.proc.wait(TIMEOUT), 0)

    def test_eof_exits_quietly(self):
        self.w.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(self.w.proc.wait(TIMEOUT), 0)

    def test_malformed_frames_exit_2(self):
        bad = [struct.pack(">I", 3) + b"{x}", struct.pack(">I", 2) + b"[]", struct.pack(">I", (16 << 20) + 1),
               struct.pack(">I", 0), struct.pack(">I", 14) + b'{"type":"zap"}',
               struct.pack(">I", 2) + b"\xff\xfe", struct.pack(">I", 27) + b'{"type":"execute","id":"1"}']
        for frame in bad:
            with self.subTest(frame=frame[:40]):
                w = Worker(stderr=subprocess.DEVNULL)  # it explains itself on fd 2
                try:
                    w.sock.sendall(frame)
                    self.assertEqual(w.proc.wait(TIMEOUT), 2)
                finally:
                    w.close()


def _timed_startup():
    w = Worker()
    w.close()
    return w.startup


if __name__ == "__main__":
    unittest.main()
