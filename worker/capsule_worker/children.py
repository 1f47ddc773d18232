"""Processes the code forks keep its capabilities, each over a channel of its own.

The supervisor's socket is one stream: two processes reading it would take each other's frames
(four children of a multiprocessing 'fork' pool calling at once used to hang the session). So
os.fork() gives the child a socketpair to its parent instead. Before the fork the parent makes the
pair; the child adopts its end as its channel (frames.adopt) and closes the supervisor's socket;
one thread of the parent (_relay) passes on what arrives on its children's ends: their output as
it is, their capability calls under ids of its own (each reply goes back under the child's id),
nothing else. A grandchild is relayed by its parent the same way, hop by hop. The broker sees
every call as the session's, as it is.

A child that comes back from the execution's code ends there (`end`), as a forked child at the
end of a script does: it never speaks for the session (no result, no done).

Python started again (python_subprocess, programs.py) gets a channel the same way (`for_program`):
its end is passed across the execve, and the relay writes the capabilities' description on it
first, which that interpreter reads as it starts (channel.py).
"""
import posix as os
from _thread import allocate_lock, start_new_thread

from . import frames

described = None  # the `configure` message's capabilities, which a Python started again is told (for_program)
forked = False  # this process is a child the code forked: it ends where the execution would end
_pair = None  # (parent's end, child's end), made just before a fork
_links = {}  # the parent's end of each child's channel -> its _Link
_wake = None  # (read, write) ends of the pipe that tells the relay thread of a new link
_relaying = False  # the relay thread runs in this process
_stopping = False  # stop() asked the relay thread to end
_finished = None  # a lock the relay thread holds until it ends
_handling = False  # the relay thread is passing a frame on (drain waits for it)


def install(capabilities):
    """Run at fork time from now on (once per process); `capabilities`, the session's, are what
    a Python this process starts is told."""
    global described
    described = capabilities
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)


def _before():
    """The child's channel, and the thread that relays it: both, or neither (then the child shares
    the supervisor's socket as before, which holds while one process at a time calls). One thread
    relays every child of a process, so forking costs no process slot per child (max_processes).
    The relay watches the parent's end from now on: after the fork the parent only closes the
    child's end (see _after_in_parent)."""
    global _pair
    _pair = _channel()


def for_program():
    """The descriptor of a new channel for a Python this process starts (the caller passes it
    across the execve and closes it after the fork), with the `configure` that interpreter reads
    first on its way; None when none can be had (or this process holds no capabilities). What
    does not fit the socket's buffer at once is written by a thread of its own."""
    if described is None:
        return None
    pair = _channel()
    if pair is None:
        return None
    link = _links[pair[0]]
    data = frames.frame_whole({"type": "configure", "capabilities": described, "max_frame": frames.max_frame()})
    rest = data[_send_now(link.fd, data):]
    if rest:
        link.hold()
        try:
            start_new_thread(_write_and_release, (link, rest))
        except RuntimeError:
            link.release()
            os.close(pair[1])
            return None
    return pair[1]


def _send_now(fd, data):
    """How much of data went to socket fd without waiting."""
    import _socket
    sock = _socket.socket(fileno=fd)
    try:
        return sock.send(data, _socket.MSG_DONTWAIT)
    except BlockingIOError:
        return 0
    except OSError:  # the other end is gone already: nothing is left to tell
        return len(data)
    finally:
        sock.detach()


def _write_and_release(link, data):
    try:
        link.write(data)
    finally:
        link.release()


def _channel():
    """(parent's end, child's end) of a new channel, the parent's end watched by the relay thread."""
    if not _start_relay():
        return None
    import _socket
    try:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:  # out of descriptors
        return None
    pair = (a.detach(), b.detach())
    _links[pair[0]] = _Link(pair[0])
    try:
        os.write(_wake[1], b"+")
    except OSError:
        pass
    return pair


def _start_relay():
    global _wake, _relaying, _finished
    if _relaying:
        return True
    try:
        _wake = os.pipe()
    except OSError:
        return False
    finished = allocate_lock()
    finished.acquire()
    try:
        start_new_thread(_relay, (finished,))
    except RuntimeError:  # no thread to be had (the process limit): no relay either
        for fd in _wake:
            close(fd)
        _wake = None
        return False
    _relaying, _finished = True, finished
    return True


def stop():
    """Before an interpreter that ends as an ordinary one finalizes (Python started again, see
    channel.py): what the children wrote goes on, then the relay thread ends. Left blocked in
    poll, it would wake during finalization and be ended by pthread_exit, which needs libgcc_s
    (not in the sandbox's root) and aborts the process."""
    global _stopping
    if not _relaying:
        return
    drain()
    _stopping = True
    try:
        os.write(_wake[1], b"q")
    except OSError:
        return
    _finished.acquire(True, 1.0)


def _after_in_parent():
    """Only a close, which leaves errno as it is: Python 3.11 reports a failed fork with the errno
    left after this hook (an os.write here turned EAGAIN into `[Errno 0] Error`). Once the child
    is gone, or was never made, the relay reads end of file on the parent's end and drops it."""
    global _pair
    if _pair is not None:
        os.close(_pair[1])
        _pair = None


def _after_in_child():
    global _pair, _wake, _relaying, forked
    forked = True
    pair, _pair = _pair, None
    for fd in [*_links, *(_wake or ())]:
        close(fd)
    _links.clear()
    _wake, _relaying, _finished = None, False, None
    if pair:  # its parent's end was among the links, closed above
        close(frames.adopt(pair[1]))  # the supervisor's socket: this process never reads it again


def end(status, exc=None):
    """A forked child back from the execution's code: print what ended it, as CPython would, and exit."""
    from . import streams
    if exc is not None:
        import traceback
        traceback.print_exception(exc)
    try:
        streams.flush()
        drain()  # what its own children wrote goes on before it goes
    finally:
        os._exit(status)


def close(fd):
    try:
        os.close(fd)
    except OSError:
        pass


class _Link:
    """The parent's end of one child's channel: closed when the child is gone and no call of its is in flight."""

    def __init__(self, fd):
        self.fd, self.users, self.lock, self.write_lock = fd, 1, allocate_lock(), allocate_lock()

    def hold(self):
        with self.lock:
            self.users += 1

    def release(self):
        with self.lock:
            self.users -= 1
            last = self.users == 0
        if last:
            close(self.fd)

    def send(self, msg):
        self.write(frames.frame_whole(msg))

    def write(self, data):
        with self.write_lock:
            try:
                frames.write_fully(self.fd, data)
            except OSError:  # the child is gone
                pass


def _relay(finished):
    """What children send: their output goes on to the supervisor as it is (a stream of an earlier
    execution is shown as late output), each capability call on a thread of its own while it runs
    (in this thread when none can be had), an input() is answered with end of file (the person at
    the keyboard answers the session's own process); anything else is dropped. Until stop()."""
    try:
        _relay_until_stopped()
    finally:
        finished.release()


def _relay_until_stopped():
    global _handling
    import select
    poller = select.poll()
    wake = _wake[0]
    poller.register(wake, select.POLLIN)
    watched = set()
    while True:
        for fd in list(_links):
            if fd not in watched:
                poller.register(fd, select.POLLIN)
                watched.add(fd)
        for fd, _ in poller.poll():
            if fd == wake:
                os.read(wake, 64)
                if _stopping:
                    return
                continue
            _handling = True
            try:
                _handle(poller, watched, fd)
            finally:
                _handling = False


def _handle(poller, watched, fd):
    link = _links.get(fd)
    msg = read_frame(fd) if link is not None else None
    if msg is None:  # the child ended (or broke the framing): its link goes
        poller.unregister(fd)
        watched.discard(fd)
        if _links.pop(fd, None) is not None:
            link.release()
        return
    _dispatch(link, msg)


def _dispatch(link, msg):
    kind, ident = msg.get("type"), msg.get("id")
    if not isinstance(ident, str):
        return
    if kind == "stream" and msg.get("name") in ("stdout", "stderr"):
        frames.send(msg)
    elif kind == "cap_call":
        link.hold()
        try:
            start_new_thread(_forward, (link, msg))
        except RuntimeError:
            _forward(link, msg)
    elif kind == "input_request":
        link.send({"type": "input_reply", "id": ident, "eof": True})


def drain(seconds=1.0):
    """Before an execution's `done`: let what its children wrote reach the supervisor first, as
    long as they keep writing, for at most `seconds`."""
    if not _links:
        return
    from time import monotonic, sleep
    give_up = monotonic() + seconds
    while monotonic() < give_up and (_handling or any(frames.unread(fd) for fd in list(_links))):
        sleep(0.002)


def _forward(link, msg):
    """One call of the child's, made as the session's; a call not shaped as the worker makes them
    is answered here (the supervisor would end the session for it as a protocol error)."""
    from .capabilities import exchange
    try:
        capability, method, args = msg.get("capability"), msg.get("method"), msg.get("args")
        if not (isinstance(capability, str) and isinstance(method, str) and isinstance(args, dict)):
            reply = _refusal("TypeError", "a cap_call names its capability and method as strings and passes its arguments as an object")
        else:
            try:
                reply = exchange(capability, method, args)  # the child encoded them already
            except BaseException as exc:  # noqa: BLE001 (told to the child, which raises it)
                reply = _refusal("ValueError", str(exc))
        link.send(dict(reply, id=msg["id"]))
    finally:
        link.release()


def _refusal(kind, message):
    return {"type": "cap_reply", "ok": False, "error": {"type": kind, "message": message}}


def read_frame(fd):
    """The next message the child sent, or None at its end (or when it breaks the framing)."""
    head = _read_exactly(fd, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if not 0 < size <= frames.max_frame():
        return None
    body = _read_exactly(fd, size)
    if body is None:
        return None
    try:
        msg = frames.loads(body.decode("utf-8"))
    except Exception:  # noqa: BLE001 (a child that sends garbage loses its channel)
        return None
    return msg if isinstance(msg, dict) else None


def _read_exactly(fd, size):
    data = bytearray()
    while len(data) < size:
        try:
            chunk = os.read(fd, size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return bytes(data)
