"""sys.stdout / sys.stderr / sys.stdin (and their binary `buffer`s) and input() for user code,
carried as protocol frames."""
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
    """sys.stdout / sys.stderr: text sent as `stream` frames, bytes through `buffer`. fileno() is the
    real fd (1 or 2), a pipe the supervisor reads too: what is written there directly shows in order
    with the frames (frames._settle). isatty() is False, as for any pipe."""

    encoding = "utf-8"
    errors = "surrogateescape"  # as CPython's UTF-8 mode: escaped bytes (os.fsdecode) go out as themselves
    mode = "w"

    def __init__(self, stream, fd):
        self.stream = stream  # the frames' "name"
        self.name = f"<{stream}>"
        self.fd = fd
        self.buffer = BinaryOutput(self)
        self.other = None  # the sibling stream, flushed first so stdout/stderr keep their write order
        self._parts = []
        self._size = 0
        self._bytes = bytearray()  # written through `buffer`; never pending together with _parts

    def writable(self):
        return True

    def fileno(self):
        return self.fd

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with _lock:
            self._before(self._bytes)
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

    def write_bytes(self, b):
        data = bytes(b)
        with _lock:
            self._before(self._parts)
            if len(self._bytes) + len(data) > BUFFER:
                self.flush()
                if len(data) > BUFFER:
                    self._send_bytes(data)
                    return len(data)
            self._bytes += data
            if b"\n" in data:
                self.flush()
        return len(data)

    def _before(self, other_kind):
        """Flush what must go out first: the sibling stream, and text before bytes or bytes before text."""
        if self.other._parts or self.other._bytes:
            self.other.flush()
        if other_kind:
            self.flush()

    def flush(self):
        with _lock:
            if self._parts:
                text = "".join(self._parts)
                self._parts.clear()
                self._size = 0
                self._send(text)
            if self._bytes:
                data = bytes(self._bytes)
                self._bytes.clear()
                self._send_bytes(data)

    def close(self):  # the session's streams outlive any user code that closes them
        self.flush()

    def detach(self):  # io.TextIOWrapper(sys.stdout.detach()); this stream stays usable for the worker
        self.flush()
        return self.buffer

    def reconfigure(self, **options):  # scripts call sys.stdout.reconfigure(encoding="utf-8"); already is
        pass

    def _send(self, text):
        i = 0
        while i < len(text):
            chunk = text[i:i + CHUNK]
            if not chunk.isascii():
                chunk = chunk[:CHUNK // 4]  # at most 4 UTF-8 bytes per character
            i += len(chunk)
            escaped = _escaped_bytes(chunk)
            if escaped is not None:
                self._send_bytes(escaped)
            else:
                frames.send({"type": "stream", "id": current_id, "name": self.stream, "text": chunk})

    def _send_bytes(self, data):
        """UTF-8 text as `text`, anything else byte for byte as base64 `data` (docs/protocol.md)."""
        for i in range(0, len(data), CHUNK):
            chunk = data[i:i + CHUNK]
            try:
                msg = {"type": "stream", "id": current_id, "name": self.stream, "text": chunk.decode("utf-8")}
            except UnicodeDecodeError:
                from binascii import b2a_base64
                msg = {"type": "stream", "id": current_id, "name": self.stream,
                       "data": b2a_base64(chunk, newline=False).decode("ascii")}
            frames.send(msg)


def _escaped_bytes(text):
    """The bytes of text that holds surrogateescape'd bytes (os.fsdecode), or None for plain text and
    for other lone surrogates (which the frame encoder turns into "?")."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


class BinaryOutput(io.BufferedIOBase):
    """sys.stdout.buffer / sys.stderr.buffer: bytes, in order with the text of the same stream."""

    mode = "wb"

    def __init__(self, text):
        self.text = text
        self.name = text.name

    def writable(self):
        return True

    def fileno(self):
        return self.text.fd

    def write(self, b):
        return self.text.write_bytes(b)

    def flush(self):
        self.text.flush()

    def close(self):  # as the text stream's: a TextIOWrapper over it closes it when collected
        self.flush()


class _LineReader:
    """read() and readline() for sys.stdin and sys.stdin.buffer: over `_buf`, which takes first
    what a read of the other one left (at most one of them holds anything), then the next line."""

    def _more(self):
        other = self.other
        if other._buf:
            self._buf += self._own(other._buf)
            other._buf = other._buf[:0]
            return True
        line = request_input("")
        if line is None:
            return False
        self._buf += self._own(line + "\n")
        return True

    def readline(self, size=-1):
        while self.newline not in self._buf and self._more():
            pass
        end = self._buf.find(self.newline) + 1 or len(self._buf)
        if size is not None and 0 <= size < end:
            end = size
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    def read(self, size=-1):
        whole = size is None or size < 0
        while (whole or len(self._buf) < size) and self._more():
            pass
        end = len(self._buf) if whole else size
        data, self._buf = self._buf[:end], self._buf[end:]
        return data


class Input(_LineReader, io.TextIOBase):
    """sys.stdin: each line is one input_request with an empty prompt. fileno() is fd 0, /dev/null:
    reading it directly sees the end of input."""

    encoding = "utf-8"
    errors = "surrogateescape"
    name = "<stdin>"
    mode = "r"
    newline = "\n"

    def __init__(self):
        self._buf = ""
        self.buffer = self.other = BinaryInput(self)

    def readable(self):
        return True

    def fileno(self):
        return 0

    @staticmethod
    def _own(data):
        return data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")


class BinaryInput(_LineReader, io.BufferedIOBase):
    """sys.stdin.buffer: the same lines as UTF-8 bytes."""

    name = "<stdin>"
    mode = "rb"
    newline = b"\n"

    def __init__(self, text):
        self.other = text
        self._buf = b""

    def readable(self):
        return True

    def fileno(self):
        return 0

    def read1(self, size=-1):
        return self.read(size)

    @staticmethod
    def _own(data):
        return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data


stdout, stderr, stdin = Output("stdout", 1), Output("stderr", 2), Input()
stdout.other, stderr.other = stderr, stdout
_builtin_input = builtins.input


def install():
    """Route the interpreter's standard streams and input() through the protocol."""
    sys.stdout = sys.__stdout__ = stdout
    sys.stderr = sys.__stderr__ = stderr
    sys.stdin = sys.__stdin__ = stdin  # __std*__ too: user code "restores" sys.stdout from them
    builtins.input = input


def flush():
    # Looked at first without the lock: mostly there is nothing to flush.
    if stdout._parts or stdout._bytes:
        stdout.flush()
    if stderr._parts or stderr._bytes:
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
