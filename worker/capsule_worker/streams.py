"""sys.stdout / sys.stderr / sys.stdin and input() for user code, carried as protocol frames."""
import builtins
import io
import sys
from _thread import RLock

from . import frames

BUFFER = 8 * 1024  # buffered characters before a flush
CHUNK = 64 * 1024  # most text per stream frame, in UTF-8 bytes

current_id = None  # id of the execute that output and input requests belong to
_lock = RLock()  # both streams: user threads share the buffers; re-entrant for handlers that print


class Output(io.TextIOBase):
    """Text stream sending `stream` frames; fileno() raises and isatty() is False (from IOBase)."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, name):
        self.name = name
        self.other = None  # the sibling stream, flushed first so stdout/stderr keep their write order
        self._parts = []
        self._size = 0

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with _lock:
            if self.other._parts:
                self.other.flush()
            if self._size + len(s) > BUFFER:
                self.flush()
                if len(s) > BUFFER:  # big text goes straight out in chunks, never copied whole
                    self._send(s)
                    return len(s)
            self._parts.append(s)
            self._size += len(s)
            if "\n" in s:
                self.flush()
        return len(s)

    def flush(self):
        with _lock:
            if self._parts:
                text = "".join(self._parts)
                self._parts.clear()
                self._size = 0
                self._send(text)

    def close(self):  # the session's streams outlive any user code that closes them
        self.flush()

    def reconfigure(self, **options):  # scripts call sys.stdout.reconfigure(encoding="utf-8"); already is
        pass

    def _send(self, text):
        i = 0
        while i < len(text):
            chunk = text[i:i + CHUNK]
            if not chunk.isascii():
                chunk = chunk[:CHUNK // 4]  # at most 4 UTF-8 bytes per character
            frames.send({"type": "stream", "id": current_id, "name": self.name, "text": chunk})
            i += len(chunk)


class Input(io.TextIOBase):
    """sys.stdin: each line is one input_request with an empty prompt."""

    encoding = "utf-8"
    errors = "strict"
    name = "<stdin>"

    def __init__(self):
        self._buf = ""

    def readable(self):
        return True

    def _fill(self):
        line = request_input("")
        if line is None:
            return False
        self._buf += line + "\n"
        return True

    def readline(self, size=-1):
        while "\n" not in self._buf and self._fill():
            pass
        end = self._buf.find("\n") + 1 or len(self._buf)
        if size is not None and 0 <= size < end:
            end = size
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    def read(self, size=-1):
        whole = size is None or size < 0
        while (whole or len(self._buf) < size) and self._fill():
            pass
        end = len(self._buf) if whole else size
        data, self._buf = self._buf[:end], self._buf[end:]
        return data


stdout, stderr, stdin = Output("stdout"), Output("stderr"), Input()
stdout.other, stderr.other = stderr, stdout
_builtin_input = builtins.input


def install():
    """Route the interpreter's standard streams and input() through the protocol."""
    sys.stdout = sys.__stdout__ = stdout
    sys.stderr = sys.__stderr__ = stderr
    sys.stdin = sys.__stdin__ = stdin  # __std*__ too: user code "restores" sys.stdout from them
    builtins.input = input


def flush():
    stdout.flush()
    stderr.flush()


def request_input(prompt):
    """Send input_request and wait for its input_reply; None means EOF."""
    flush()
    frames.send({"type": "input_request", "id": current_id, "prompt": prompt, "password": False})
    while True:
        msg = frames.recv()
        if msg["type"] != "input_reply":
            frames.fail(f"{msg['type']} while waiting for input_reply")
        if msg["id"] == current_id:  # other ids are stale replies to an interrupted input()
            return None if msg.get("eof") is True else msg["value"]


def input(prompt=""):
    if sys.stdin is not stdin:  # user redirected stdin: behave like the real input()
        return _builtin_input(prompt)
    line = request_input(str(prompt))
    if line is None:
        raise EOFError("EOF when reading a line")
    return line
