"""Frames on the supervisor socket (4-byte big-endian length + UTF-8 JSON object) and SIGINT deferral.

JSON choice, measured with python3.11 -X importtime: `import json` costs ~5 ms (json.decoder pulls in
`re`), its C accelerator `_json` ~0.2 ms. So frames are encoded by the small `_encode` below on top of
`_json.encode_basestring` and decoded with `_json.make_scanner`; plain `json` is only a fallback.

SIGINT: a KeyboardInterrupt raised half-way through a frame would desynchronise the stream, so our
handler only raises while user code runs (`_masked` false) and otherwise records it in `_pending`.
"""
import posix as os  # the functions `os` re-exports; importing `os` itself costs ~0.7 ms without site
from _thread import allocate_lock, get_ident
from time import monotonic, sleep

MAX_FRAME = 16 << 20  # docs/protocol.md: limits.max_frame_bytes default
CLIP = 1 << 20  # longest string member sent, so a huge repr or message cannot exceed MAX_FRAME

_fd = -1
_main = None  # ident of the thread that serves; Python signal handlers only run there
_masked = True  # worker code runs masked; user code unmasked (see call_user)
_pending = False  # a SIGINT arrived while masked
_lock = allocate_lock()  # one frame at a time when user threads print
_writer = None  # thread currently inside _write, to catch re-entry from __del__ or signal handlers
_queued = []  # frames produced by such re-entry, written right after the current one
_output_pipes = ()  # (fd, inode) of fds 1 and 2 when they are the pipes the supervisor reads (see _settle)
_ioctl = None  # fcntl.ioctl, imported on first use (built into the sandbox's libpython)
FIONREAD = 0x541B  # bytes not yet read from a pipe (either end)
SETTLE_SECONDS = 1.0  # longest wait for the supervisor to read them before a frame goes anyway

try:
    from _json import encode_basestring as _quote, make_scanner as _make_scanner
except ImportError:  # a CPython built without the accelerator: pay for the pure-Python module
    from json import loads as _loads
    from json.encoder import py_encode_basestring as _quote
else:
    class _Strict:  # the attributes _json's scanner reads from a json.JSONDecoder
        strict = True
        object_hook = object_pairs_hook = None
        parse_float, parse_int = float, int

        def parse_constant(name):  # NaN and Infinity are not JSON
            raise ValueError(name)

    _scan = _make_scanner(_Strict)

    def _loads(text):
        start = len(text) - len(text.lstrip(" \t\n\r"))
        value, end = _scan(text, start)
        if text[end:].strip(" \t\n\r"):
            raise ValueError("trailing data")
        return value

# members each supervisor message must carry (docs/protocol.md); anything else is a protocol error
_MEMBERS = {
    "execute": (("id", str), ("filename", str), ("argv", list), ("result", bool)),  # and `code` or `source`
    "input_reply": (("id", str),),
    "shutdown": (),
}


def start(fd):
    """Adopt fd as the supervisor socket and take over SIGINT (the embedding may not install handlers)."""
    global _fd, _main, _output_pipes
    import _signal
    _fd, _main = fd, get_ident()
    _output_pipes = tuple((f, _pipe_inode(f)) for f in (1, 2) if _pipe_inode(f) is not None)
    _signal.signal(_signal.SIGINT, _on_sigint)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)  # a vanished supervisor is an EPIPE, handled in _write


def _pipe_inode(fd):
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_ino if info.st_mode & 0o170000 == 0o010000 else None  # S_IFIFO


def _on_sigint(signum, frame):
    global _pending
    if _masked:
        _pending = True
    else:
        raise KeyboardInterrupt


def _raise_pending(outer_masked):
    """Deliver a SIGINT deferred during worker I/O once we are back in user code."""
    global _pending
    if not outer_masked and _pending:
        _pending = False
        raise KeyboardInterrupt


def call_user(fn, *args):
    """Run fn (user code) with SIGINT raising KeyboardInterrupt; worker code around it stays masked."""
    global _masked
    _masked = False
    try:
        _raise_pending(False)  # a SIGINT that came with or after the execute frame
        return fn(*args)
    finally:
        _masked = True


def fail(why):
    """Protocol error from the supervisor: short note on fd 2 (often /dev/null), exit status 2."""
    try:
        os.write(2, f"capsule_worker: protocol error: {why}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    os._exit(2)


# -- writing ---------------------------------------------------------------------------------------

def _encode(v):
    if isinstance(v, str):
        return _quote(v if len(v) <= CLIP else v[:CLIP] + "\n[truncated]\n")
    if v is None or v is True or v is False:
        return "null" if v is None else "true" if v else "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        return float.__repr__(v)  # only finite values (durations) are ever sent
    if isinstance(v, dict):
        return "{" + ",".join(_quote(k) + ":" + _encode(x) for k, x in v.items()) + "}"
    return "[" + ",".join(map(_encode, v)) + "]"


def encode(msg):
    """Frame bytes for msg; lone surrogates (surrogateescape'd data) become '?' so the JSON is valid UTF-8."""
    body = _encode(msg).encode("utf-8", "replace")
    return len(body).to_bytes(4, "big") + body


def send(msg):
    write(encode(msg))


def write(data):
    """Write whole frame bytes; a SIGINT meanwhile is deferred, then raised if we came from user code."""
    global _masked
    if get_ident() != _main:
        return _write(data)
    outer = _masked
    _masked = True
    try:
        _write(data)
    finally:
        _masked = outer
    _raise_pending(outer)


def _write(data):
    global _writer
    me = get_ident()
    if _writer == me:  # re-entered mid-frame (finaliser or signal handler printing): queue it
        _queued.append(data)
        return
    _settle()
    with _lock:
        _writer = me
        try:
            _write_all(data)
            while _queued:
                _write_all(_queued.pop(0))
        finally:
            _writer = None


def _settle():
    """Wait until the supervisor has read what was written to fds 1 and 2 directly (os.write, C
    code, faulthandler), so that it shows before this frame, as it was written. The wait ends when
    a pipe is empty, or emptier than before (the supervisor read it while someone writes on). An
    fd the code pointed elsewhere (os.dup2 of a file or of its own pipe) is not waited for."""
    for fd, inode in _output_pipes:
        try:
            unread = _unread(fd)
            if unread and _pipe_inode(fd) != inode:
                continue
            delay, give_up = 2e-5, monotonic() + SETTLE_SECONDS
            while unread and monotonic() < give_up:
                sleep(delay)
                delay = min(delay * 2, 1e-3)
                unread, before = _unread(fd), unread
                if unread < before:
                    break
        except Exception:  # fd closed or replaced, no memory: the frame matters more than the order
            pass


def _unread(fd):
    global _ioctl
    if _ioctl is None:
        from fcntl import ioctl as _ioctl
    return int.from_bytes(_ioctl(fd, FIONREAD, b"\0\0\0\0"), "little")


def _write_all(data):
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(_fd, view):]  # partial writes continue; EINTR is retried (PEP 475)
    except OSError:  # supervisor gone: nobody is left to report to
        os._exit(0)


# -- reading ---------------------------------------------------------------------------------------

def recv():
    """Next valid message from the supervisor; exits 0 on EOF or `shutdown`, 2 on a malformed frame.

    Idle (masked) waits drop SIGINTs that arrived before the frame: they were meant for an execution
    that already finished. From user code (input()), the wait raises KeyboardInterrupt, but only
    before any byte is consumed, so the stream stays in sync.
    """
    global _masked
    if get_ident() != _main:  # signals only reach the main thread: nothing to mask
        return _recv(False)
    outer = _masked
    if not outer:
        import select
        select.select([_fd], [], [])  # interruptible wait that consumes nothing
    _masked = True
    try:
        msg = _recv(outer)
    finally:
        _masked = outer
    _raise_pending(outer)
    return msg


def _recv(idle):
    global _pending
    head = _read(4)
    if idle:
        _pending = False
    if not head:
        os._exit(0)
    head += _read_exact(4 - len(head))
    size = int.from_bytes(head, "big")
    if not 0 < size <= MAX_FRAME:
        fail(f"frame length {size}")
    try:
        msg = _loads(_read_exact(size).decode("utf-8"))
    except Exception as exc:
        fail(f"bad JSON ({type(exc).__name__})")
    if not _valid(msg):
        fail(f"unexpected message {str(msg)[:200]}")
    if msg["type"] == "shutdown":  # valid at any wait, idle or in input()
        os._exit(0)  # not sys.exit: finalisation could wait forever on user threads
    return msg


def _valid(msg):
    kind = msg.get("type") if isinstance(msg, dict) else None
    members = _MEMBERS.get(kind) if isinstance(kind, str) else None
    if members is None or not all(isinstance(msg.get(k), t) for k, t in members):
        return False
    if kind == "execute":
        one_source = isinstance(msg.get("code"), str) != isinstance(msg.get("source"), str)
        return one_source and all(isinstance(a, str) for a in msg["argv"])
    if kind == "input_reply":
        return isinstance(msg.get("value"), str) or msg.get("eof") is True
    return True


def _read(n):
    try:
        return os.read(_fd, n)
    except OSError:
        os._exit(0)  # the socket is gone: same as EOF


def _read_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = _read(n - len(buf))
        if not chunk:
            fail("EOF inside a frame")
        buf += chunk
    return buf
