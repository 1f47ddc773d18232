"""Frames on the supervisor socket (4-byte big-endian length + UTF-8 JSON object) and SIGINT deferral.

JSON choice, measured with python3.11 -X importtime: `import json` costs ~5 ms (json.decoder pulls in
`re`), its C accelerator `_json` ~0.2 ms. So frames are encoded by the small `_encode` below on top of
`_json.encode_basestring` and decoded with `_json.make_scanner`; plain `json` is only a fallback.

SIGINT: a KeyboardInterrupt raised half-way through a frame would desynchronise the stream, so our
handler only raises while user code runs (`_masked` false) and otherwise records it in `_pending`.

Reading: any thread may wait for a frame (the main thread for `execute` and `input_reply`, any
thread for the `cap_reply` of its capability call). Whichever waits first reads the socket for
all and hands each frame to its waiter; the others sleep on a lock of their own until a frame
arrives, then look again. No reader thread exists unless code waits. The reader takes what the
socket holds in one read (many threads' replies at once when many call) and keeps what follows
the last whole frame for the next read, so replies cost one system call (and one wait for the
GIL) a batch rather than two a frame.
"""
import posix as os  # the functions `os` re-exports; importing `os` itself costs ~0.7 ms without site
from _thread import allocate_lock, get_ident
from time import monotonic, sleep

MAX_FRAME = 16 << 20  # docs/protocol.md: limits.max_frame_bytes default
CLIP = 1 << 20  # longest string member sent, so a huge repr or message fits the smallest frame limit (8 MiB)

_fd = -1
_max_frame = MAX_FRAME  # the largest frame accepted: the policy's limits.max_frame_bytes
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

_mutex = allocate_lock()  # guards the reading state below
_reader = None  # ident of the thread reading the socket for everyone, or None
_in_read = None  # ident of the thread inside a read right now (to catch re-entry from a signal handler)
_sleepers = {}  # what a waiting thread waits for ("main" or a call id) -> the lock it sleeps on
_inbox = []  # messages for the main thread (execute, input_reply) read by another thread
_replies = {}  # cap_call id -> its cap_reply, or None while outstanding
_buffer = bytearray()  # bytes read from the socket after the last whole frame (only the reader touches it)
READ_SIZE = 1 << 16  # one read takes up to this much (more when a frame needs it)

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
        start = 0 if text[:1] == "{" else len(text) - len(text.lstrip(" \t\n\r"))
        value, end = _scan(text, start)
        if end < len(text) and text[end:].strip(" \t\n\r"):
            raise ValueError("trailing data")
        return value

# members each supervisor message must carry (docs/protocol.md); anything else is a protocol error
_MEMBERS = {
    "execute": (("id", str), ("filename", str), ("argv", list), ("result", bool)),  # and `code` or `source`
    "input_reply": (("id", str),),
    "cap_reply": (("id", str), ("ok", bool)),
    "configure": (("capabilities", list),),
    "complete": (("id", str), ("code", str)),
    "checkpoint": (("id", str),),
    "restore": (("id", str), ("data", str), ("replace", bool)),
    "preload": (("modules", list),),
    "shutdown": (),
}


def start(fd, max_frame=MAX_FRAME):
    """Adopt fd as the supervisor socket and take over SIGINT (the embedding may not install handlers)."""
    global _fd, _main, _max_frame, _output_pipes
    import _signal
    _fd, _main, _max_frame = fd, get_ident(), max_frame
    _output_pipes = tuple((f, _pipe_inode(f)) for f in (1, 2) if _pipe_inode(f) is not None)
    _signal.signal(_signal.SIGINT, _on_sigint)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)  # a vanished supervisor is an EPIPE, handled in _write


def adopt(fd):
    """In a forked child (children.py): fd, a socket to the parent's relay, is the channel from now
    on; the reading and writing state belonged to the parent's threads, gone with the fork.
    Returns the descriptor of the channel it replaces."""
    global _fd, _main, _lock, _mutex, _writer, _queued, _reader, _in_read, _sleepers, _inbox, _replies, _buffer
    old, _fd, _main = _fd, fd, get_ident()
    _lock, _mutex = allocate_lock(), allocate_lock()
    _writer = _reader = _in_read = None
    _queued, _sleepers, _inbox, _replies, _buffer = [], {}, [], {}, bytearray()
    return old


def max_frame():
    return _max_frame


def limit(max_frame):
    """Accept frames up to max_frame bytes (Python started again learns the policy's from `configure`)."""
    global _max_frame
    _max_frame = max_frame


def loads(text):
    return _loads(text)


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


def drop_pending():
    """Forget a SIGINT that arrived while the worker was idle."""
    global _pending
    _pending = False


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
    """Protocol error from the supervisor (or code that read the channel itself): exit status 2."""
    die(f"protocol error: {why}", 2)


def die(why, status):
    """End the worker, saying why on the running execution's stderr (and on fd 2, often /dev/null):
    the supervisor then reports an early exit, and this line is what names its cause."""
    text = f"capsule_worker: {why}\n"
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass
    try:
        from .streams import current_id
        # A user thread may be mid-frame: wait for it a little, never interleave with it.
        if current_id is not None and _lock.acquire(timeout=1):
            _write_all(encode({"type": "stream", "id": current_id, "name": "stderr", "text": text}))
    except BaseException:  # nothing is left to try: the exit status still tells
        pass
    os._exit(status)


# -- writing ---------------------------------------------------------------------------------------

def truncated(count, unit):
    """The one marker of a cut the worker made: what follows it, or stood in its place, is gone."""
    return f"[truncated: {count} {unit} omitted]"


def clip(text, limit):
    """text, or its first `limit` characters and the marker on a line of its own."""
    return text if len(text) <= limit else f"{text[:limit]}\n{truncated(len(text) - limit, 'characters')}\n"


def _encode(v, limit=CLIP):
    if isinstance(v, str):
        return _quote(v if limit is None or len(v) <= limit else clip(v, limit))
    if v is None or v is True or v is False:
        return "null" if v is None else "true" if v else "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        return float.__repr__(v)  # only finite values (durations) are ever sent
    if isinstance(v, dict):
        return "{" + ",".join(_quote(k) + ":" + _encode(x, limit) for k, x in v.items()) + "}"
    return "[" + ",".join(_encode(x, limit) for x in v) + "]"


def _refuse(value):
    raise TypeError(type(value).__name__)


try:  # _json's C encoder: a `done` frame in ~1 µs instead of ~8 through _encode
    from _json import make_encoder as _make_encoder
    _c_encode = _make_encoder(None, _refuse, _quote, None, ":", ",", False, False, False)
except ImportError:
    _c_encode = None


def encode(msg):
    """Frame bytes for msg; lone surrogates (surrogateescape'd data) become '?' so the JSON is valid UTF-8.

    The C encoder first; `_encode`, which clips strings, when its text is longer than CLIP (only
    then can one string be over CLIP) or it refuses a value (NaN, a type JSON lacks)."""
    text = None
    if _c_encode is not None:
        try:
            text = "".join(_c_encode(msg, 0))
        except (TypeError, ValueError):
            pass
    if text is None or len(text) > CLIP:
        text = _encode(msg)
    body = text.encode("utf-8", "replace")
    return len(body).to_bytes(4, "big") + body


def frame_whole(msg):
    """Frame bytes for msg with no string clipped (a capability call's data must arrive intact);
    ValueError when it does not fit one frame."""
    body = _encode(msg, None).encode("utf-8", "replace")
    if len(body) > _max_frame:
        raise ValueError(f"the call is {len(body)} bytes as sent, more than the {_max_frame} one frame may carry "
                         "(limits.max_frame_bytes in the policy)")
    return len(body).to_bytes(4, "big") + body


def send_whole(msg):
    """Send msg whole (frame_whole), or raise ValueError when it does not fit one frame."""
    write(frame_whole(msg))


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


def unread(fd):
    """Bytes waiting to be read on fd (a pipe or a socket); 0 when it cannot tell."""
    try:
        return _unread(fd)
    except Exception:
        return 0


def _unread(fd):
    global _ioctl
    if _ioctl is None:
        from fcntl import ioctl as _ioctl
    count = bytearray(4)  # filled in place: a fifth of the cost of passing bytes in and getting bytes back
    _ioctl(fd, FIONREAD, count, True)
    return int.from_bytes(count, "little")


def _write_all(data):
    try:
        write_fully(_fd, data)
    except OSError:  # supervisor gone: nobody is left to report to
        os._exit(0)


def write_fully(fd, data):
    """All of data to fd (also a forked child's channel, children.py), or OSError."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]  # partial writes continue; EINTR is retried (PEP 475)


# -- reading ---------------------------------------------------------------------------------------

def recv():
    """Next message for the main thread (`execute`, `input_reply`, `configure`); exits 0 on EOF or
    `shutdown`, 2 on a malformed frame. Capability replies read meanwhile go to their callers.

    Idle (masked) waits drop SIGINTs that arrived before the frame: they were meant for an execution
    that already finished. From user code (input()), the wait raises KeyboardInterrupt, but only
    before any byte is consumed, so the stream stays in sync.
    """
    return _wait("main", lambda: _inbox.pop(0) if _inbox else None)


def expect_reply(cid):
    """Register cap_call cid before sending it, so a quick reply finds its caller."""
    _replies[cid] = None


def forget_reply(cid):
    """The call was never sent: stop expecting its reply."""
    _replies.pop(cid, None)


def reply(cid):
    """Wait for the cap_reply of call cid (registered with expect_reply); forgotten if interrupted."""
    try:
        return _wait(cid, lambda: _replies.pop(cid) if _replies.get(cid) is not None else None)
    finally:
        _replies.pop(cid, None)


def _wait(key, take):
    """Until take() (called under _mutex) gives a message: read frames for everyone, or sleep.

    The reader keeps reading until its own message comes, waking only the thread each frame is
    for; when it has its message it hands the reading on to one sleeper, so a frame wakes at most
    two threads however many wait.

    The main thread waits with SIGINT masked, so that no KeyboardInterrupt can land inside the
    bookkeeping (a lock taken and never released): when the wait comes from user code (input(),
    a capability call), a SIGINT is noted and raised at the next slice of the wait instead.
    """
    global _masked
    me = get_ident()
    main = me == _main
    outer = _masked if main else True
    if main:
        _masked = True
    try:
        msg = _wait_masked(key, take, me, main, outer)
    finally:
        if main:
            _masked = outer
    if main:
        _interrupt_now(outer)  # a SIGINT that came during the wait wins over what the wait brought
    return msg


def _interrupt_now(outer):
    """Raise the KeyboardInterrupt a SIGINT asked for, if the wait came from user code."""
    global _pending
    if not outer and _pending:
        _pending = False
        raise KeyboardInterrupt


def _wait_masked(key, take, me, main, outer):
    global _reader
    while True:
        with _mutex:
            msg = take()
            if msg is not None:
                if _reader == me:
                    _reader = None
                    _hand_off()
                return msg
            if _in_read == me:  # a signal handler or finaliser waiting while this thread reads
                raise RuntimeError("capsule: a capability call or input() cannot run while this thread reads the channel")
            wake = None
            if _reader is None:
                _reader = me
            elif _reader != me:
                wake = allocate_lock()
                wake.acquire()
                _sleepers[key] = wake
        if wake is not None:
            try:
                # Released for our message or to take over reading; the main thread waits in
                # slices, to look for a SIGINT between them.
                if main:
                    while not wake.acquire(timeout=0.05):
                        _interrupt_now(outer)
                else:
                    wake.acquire()
            except BaseException:
                with _mutex:
                    if _sleepers.get(key) is wake:
                        del _sleepers[key]
                    else:  # woken at the same time: pass the reading on, it may have been ours to take
                        _hand_off()
                raise
            continue
        msg = _read_and_deliver(me, main, outer, take)
        if msg is not None:
            return msg


def _read_and_deliver(me, main, outer, take):
    """The frames the socket holds, read by the reader (me) and handed to the threads they are for;
    what take() then gives (the reader's own message, when it came), else None."""
    global _reader, _in_read
    msgs = None
    try:
        _in_read = me
        if main and not outer and _whole_frame() is None:
            import select
            # A wait that consumes nothing, in slices: between them a SIGINT is raised.
            while not select.select([_fd], [], [], 0.05)[0]:
                _interrupt_now(outer)
        msgs = _recv(outer if main else False)
    except BaseException:
        with _mutex:
            _reader = None
            _hand_off()
        raise
    finally:
        _in_read = None
    with _mutex:
        for msg in msgs:
            waiter = _sleepers.pop(_deliver(msg), None)
            if waiter is not None:
                waiter.release()
        # Its own message at once, unless the wait came from user code: a SIGINT may yet be
        # raised below, and the message must then stay filed for a later wait.
        mine = take() if outer or not main else None
        if mine is not None:
            _reader = None
            _hand_off()
    if main and mine is None:
        try:
            _interrupt_now(outer)  # after delivering: the frame may be another thread's reply
        except BaseException:
            with _mutex:
                if _reader == me:
                    _reader = None
                    _hand_off()
            raise
    return mine


def _hand_off():
    """Wake one sleeper to take over reading (called under _mutex with no reader)."""
    if _sleepers:
        _sleepers.popitem()[1].release()


def _deliver(msg):
    """File msg for its thread; returns what that thread waits for ("main" or a call id)."""
    if msg["type"] == "cap_reply":
        if msg["id"] in _replies:  # else the caller was interrupted: the reply is dropped
            _replies[msg["id"]] = msg
        return msg["id"]
    _inbox.append(msg)
    return "main"


def _recv(idle):
    """At least one message: the whole frames in _buffer, reading the socket until there is one."""
    global _pending
    msgs = []
    while True:
        size = _whole_frame()
        while size is not None:  # the frames already read, in order
            if idle:  # a SIGINT before the frame was meant for an execution that has finished
                _pending = False
            body = bytes(_buffer[4:4 + size])
            del _buffer[:4 + size]
            msgs.append(_message(body))
            size = _whole_frame()
        if msgs:
            return msgs
        need = int.from_bytes(_buffer[:4], "big") + 4 - len(_buffer) if len(_buffer) >= 4 else 4 - len(_buffer)
        chunk = _read(max(READ_SIZE, need))
        if not chunk:
            if _buffer:
                fail("EOF inside a frame")
            os._exit(0)
        if not _buffer and len(chunk) > 4 and len(chunk) == 4 + int.from_bytes(chunk[:4], "big") <= 4 + _max_frame:
            if idle:  # the usual case, one whole frame read alone: no copy through _buffer
                _pending = False
            return [_message(chunk[4:])]
        _buffer.extend(chunk)


def _whole_frame():
    """The length of the frame at the start of _buffer when all of it is there, else None; a bad
    length is a protocol error as soon as it is read."""
    if len(_buffer) < 4:
        return None
    size = int.from_bytes(_buffer[:4], "big")
    if not 0 < size <= _max_frame:
        fail(f"frame length {size}")
    return size if len(_buffer) >= 4 + size else None


def _message(body):
    try:
        msg = _loads(body.decode("utf-8"))
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
    if members is None:
        return False
    for name, kind in members:
        if not isinstance(msg.get(name), kind):
            return False
    if kind == "execute":
        one_source = isinstance(msg.get("code"), str) != isinstance(msg.get("source"), str)
        return one_source and all(isinstance(a, str) for a in msg["argv"])
    if kind == "input_reply":
        return isinstance(msg.get("value"), str) or msg.get("eof") is True
    if kind == "cap_reply":
        error = msg.get("error")
        return msg["ok"] or (isinstance(error, dict) and isinstance(error.get("type"), str)
                             and isinstance(error.get("message"), str))
    return True


def _read(n):
    try:
        return os.read(_fd, n)
    except OSError:
        os._exit(0)  # the socket is gone: same as EOF
