"""The `capsule` module the code imports: capability objects whose methods become `cap_call` frames.

The supervisor's `configure` message describes what the policy grants (names, methods, parameters,
docstrings); each granted capability becomes an object with real methods (signatures and help()),
injected into the session's namespace and importable (`from capsule import file`). A capability the
policy does not grant is still there, so that using it raises CapabilityDenied with the supervisor's
reason (and the attempt is audited), never an AttributeError.
"""
import sys
from binascii import a2b_base64, b2a_base64
from itertools import count

from . import frames, streams

BUILTIN = ("display", "input", "env", "file", "net", "db")  # known even when not granted

_ids = count(1)  # next() on a count is atomic under the GIL: ids are unique across threads


class CapabilityDenied(PermissionError):
    """The policy does not allow this call; the message names the rule and what would allow it."""


CapabilityDenied.__module__ = "capsule"

# The exceptions a cap_reply may name; anything else becomes RuntimeError (never looked up by name).
_EXCEPTIONS = {
    "CapabilityDenied": CapabilityDenied, "OSError": OSError, "TimeoutError": TimeoutError,
    "ConnectionError": ConnectionError, "ValueError": ValueError, "TypeError": TypeError,
    "RuntimeError": RuntimeError, "AttributeError": AttributeError, "KeyError": KeyError,
    "LookupError": LookupError, "PermissionError": PermissionError,
    "KeyboardInterrupt": KeyboardInterrupt,  # the person pressed ^C at an approval question
}


def call(capability, method, args):
    """One capability call: send cap_call, wait for its cap_reply (other threads may call meanwhile)."""
    streams.flush()  # output before the call reaches the client before what the call shows
    msg = exchange(capability, method, _encode(args))
    if msg["ok"]:
        return _decode(msg.get("value"))
    error = msg["error"]
    kind = _EXCEPTIONS.get(error["type"], RuntimeError)
    errno = error.get("errno")
    if kind is OSError and isinstance(errno, int):
        raise OSError(errno, error["message"])  # Python picks the subclass: FileNotFoundError, ...
    raise kind(error["message"])


def exchange(capability, method, encoded_args):
    """The cap_reply message to a cap_call made under a fresh id (also for the calls of forked
    children, children.py); ValueError when the call does not fit one frame."""
    cid = f"c{next(_ids)}"
    frames.expect_reply(cid)
    try:
        frames.send_whole({"type": "cap_call", "id": cid, "capability": capability, "method": method, "args": encoded_args})
    except BaseException:
        frames.forget_reply(cid)
        raise
    return frames.reply(cid)


def _encode(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": b2a_base64(bytes(value), newline=False).decode("ascii")}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"capability arguments: dict keys must be str, not {type(key).__name__}")
            out[key] = _encode(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, float) and value - value != 0:  # NaN and infinities are not JSON
        raise ValueError(f"capability arguments cannot carry {value!r}")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"capability arguments cannot carry {type(value).__name__} objects (str, bytes, numbers, lists and dicts can)")


def _decode(value):
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            return a2b_base64(value["$bytes"])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


class Capability:
    """A capability the policy grants; its methods are calls to the supervisor."""

    _name = ""

    def __repr__(self):
        return f"<capsule.{self._name}: {', '.join(m for m in type(self).__dict__ if not m.startswith('_'))}>"


class Ungranted:
    """A capability this policy does not grant: every use raises CapabilityDenied with the reason."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, method):
        if method.startswith("__"):
            raise AttributeError(method)

        def denied(*args, **kwargs):
            return call(self._name, method, {})  # the supervisor refuses it and says why
        denied.__name__ = method
        return denied

    def __call__(self, *args, **kwargs):
        return call(self._name, "__call__", {})

    def __dir__(self):
        return []

    def __repr__(self):
        return f"<capsule.{self._name}: not granted by this policy>"


def _method_source(cap, method):
    """`def name(self, a, b=default): return _call(cap, name, {...})`, so help() shows the real signature."""
    params, names = [], []
    for p in method["params"]:
        name = p["name"]
        if not name.isidentifier():
            raise ValueError(f"bad parameter name {name!r}")
        names.append(name)
        params.append(f"{name}=_defaults[{name!r}]" if "default" in p else name)
    args = ", ".join(f"{n!r}: {n}" for n in names)
    return f"def {method['name']}(self{''.join(', ' + p for p in params)}):\n    return _call({cap!r}, {method['name']!r}, {{{args}}})\n"


def _build(desc):
    """The capability object for one entry of `configure`."""
    cap = desc["name"]
    namespace = {"__doc__": desc.get("doc", ""), "_name": cap, "__module__": "capsule"}
    for method in desc["methods"]:
        if not method["name"].isidentifier():
            continue
        scope = {"_call": call, "_defaults": {p["name"]: _decode(p["default"]) for p in method["params"] if "default" in p}}
        exec(_method_source(cap, method), scope)
        fn = scope[method["name"]]
        fn.__doc__ = method.get("doc", "")
        fn.__qualname__ = f"{cap}.{method['name']}"
        namespace[method["name"]] = fn
    namespace.update(_EXTRAS.get(cap, {}))
    kind = type(cap.replace(".", "_").title().replace("_", ""), (Capability,), namespace)
    return kind()


# -- conveniences written on top of the supervisor's methods ---------------------------------------

def _read_text(self, path, encoding="utf-8", errors="strict"):
    """The whole file as text."""
    return self.read_bytes(path).decode(encoding, errors)


def _write_text(self, path, text, encoding="utf-8"):
    """Create or replace the file with text; returns the number of characters written."""
    self.write_bytes(path, text.encode(encoding))
    return len(text)


def _open(self, path, mode="r", encoding="utf-8"):
    """A file object for path: 'r'/'rb' read it whole now; 'w'/'wb'/'a'/'ab' write it on close()."""
    import io
    if mode not in ("r", "rb", "w", "wb", "a", "ab", "rt", "wt", "at"):
        raise ValueError(f"file.open: mode {mode!r} is not one of 'r', 'rb', 'w', 'wb', 'a', 'ab'")
    binary = "b" in mode
    if mode[0] == "r":
        data = self.read_bytes(path)
        return io.BytesIO(data) if binary else io.StringIO(data.decode(encoding), newline=None)
    cap, append = self, mode[0] == "a"

    class _Writer(io.BytesIO if binary else io.StringIO):
        def close(self):
            if not self.closed:
                data = self.getvalue()
                data = data if binary else data.encode(encoding)
                cap.append(path, data) if append else cap.write_bytes(path, data)
            super().close()

        def __exit__(self, *exc):
            self.close()
    return _Writer()


class Response:
    """What net.fetch returns: .status, .reason, .headers (a dict; .header_list keeps repeats),
    .url (after redirects), .content (bytes), .text and .json()."""

    def __init__(self, answer):
        self.status = answer["status"]
        self.reason = answer.get("reason", "")
        self.header_list = [tuple(pair) for pair in answer["headers"]]
        self.headers = {name.lower(): value for name, value in self.header_list}
        self.url = answer["url"]
        self.content = answer["body"]

    @property
    def ok(self):
        return 200 <= self.status < 400

    @property
    def text(self):
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        return self.content.decode(charset, "replace")

    def json(self):
        import json
        return json.loads(self.content)

    def raise_for_status(self):
        if self.status >= 400:
            raise ConnectionError(f"{self.status} {self.reason} for {self.url}")

    def __repr__(self):
        return f"<Response [{self.status}]>"


def _fetch(self, url, method="GET", headers=None, body=None, json=None, timeout=None):
    """One HTTP request to a URL the policy lists; returns a Response. json= sends a JSON body."""
    headers = dict(headers or {})
    if json is not None:
        import json as _json
        body = _json.dumps(json).encode()
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    return Response(call("net", "fetch", {"url": str(url), "method": method, "headers": headers, "body": body,
                                          "timeout": timeout}))


class WebSocketClosed(ConnectionError):
    """The WebSocket is closed; .code and .reason say how (1000: a normal close, 1006: the
    connection ended without a close frame, 1009: a message was larger than max_bytes)."""

    def __init__(self, message, code=1006, reason=""):
        super().__init__(message)
        self.code = code
        self.reason = reason


class WebSocket:
    """An open WebSocket, from net.websocket(url). send(str | bytes) sends a text or binary
    message; recv(timeout=None) returns the next one (str for text, bytes for binary) and raises
    WebSocketClosed (a ConnectionError) once it is closed, TimeoutError when none came in time;
    close(code=1000, reason="") closes it. `with` closes it too; iterating yields the messages
    until the server closes it. .closed, .close_code, .close_reason and .url say where it stands."""

    def __init__(self, url, socket):
        self.url = url
        self.closed = False
        self.close_code = None
        self.close_reason = ""
        self._socket = socket

    def send(self, message):
        """Send one message: str as a text message, bytes (bytearray, memoryview) as a binary one."""
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"WebSocket.send() takes str or bytes, not {type(message).__name__}")
        self._check_open()
        call("net", "ws_send", {"socket": self._socket, "data": message})

    def recv(self, timeout=None):
        """The next message (str or bytes), waiting up to timeout seconds (None: until one comes)."""
        self._check_open()
        answer = call("net", "ws_recv", {"socket": self._socket, "timeout": timeout})
        if answer.get("closed"):
            self.closed, self.close_code, self.close_reason = True, answer["code"], answer["reason"]
            self._check_open()
        return answer["data"].decode("utf-8") if answer["text"] else answer["data"]

    def close(self, code=1000, reason=""):
        """Close the WebSocket (code 1000 or 3000-4999, reason up to 123 bytes); closing twice does nothing."""
        if self.closed:
            return
        call("net", "ws_close", {"socket": self._socket, "code": code, "reason": reason})
        self.closed, self.close_code, self.close_reason = True, code, reason

    def _check_open(self):
        if self.closed:
            how = f"code {self.close_code}" + (f": {self.close_reason}" if self.close_reason else "")
            raise WebSocketClosed(f"the WebSocket to {self.url} is closed ({how})", self.close_code, self.close_reason)

    def __iter__(self):
        while True:
            try:
                yield self.recv()
            except WebSocketClosed:
                return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<WebSocket {self.url} {'closed' if self.closed else 'open'}>"


WebSocket.__module__ = WebSocketClosed.__module__ = "capsule"


def _websocket(self, url, headers=None, timeout=None):
    """Open a WebSocket (ws:// or wss://) to a URL the policy lists ([capabilities.net] urls and
    websocket = true, level trusted); returns a WebSocket. timeout bounds the handshake."""
    answer = call("net", "websocket", {"url": str(url), "headers": dict(headers or {}), "timeout": timeout})
    return WebSocket(str(url), answer["socket"])


_EXTRAS = {"file": {"read_text": _read_text, "write_text": _write_text, "open": _open},
           "net": {"fetch": _fetch, "websocket": _websocket}}


def _display(*objs, raw=False):
    """Show each object to whoever runs the session, richly where it can: _repr_mimebundle_,
    _repr_html_, _repr_markdown_, _repr_svg_, _repr_png_, _repr_jpeg_, _repr_json_, _repr_latex_;
    text/plain is always its repr. raw=True sends objs as MIME bundles themselves."""
    for obj in objs:
        show(*((obj, {}) if raw else mimebundle(obj)))


def show(data, metadata):
    """Send one MIME bundle to whoever runs the session (the display capability, granted)."""
    call("display", "show", {"data": data, "metadata": metadata})


_REPRS = (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"), ("_repr_svg_", "image/svg+xml"),
          ("_repr_png_", "image/png"), ("_repr_jpeg_", "image/jpeg"), ("_repr_json_", "application/json"),
          ("_repr_latex_", "text/latex"))


def mimebundle(obj):
    """obj's MIME bundle and metadata from its display methods; text/plain is its repr."""
    data, metadata = {}, {}
    method = getattr(obj, "_repr_mimebundle_", None)
    if callable(method):
        got = method(include=None, exclude=None)
        if isinstance(got, tuple):
            got, metadata = got[0], got[1] or {}
        data.update(got or {})
    for attr, mime in _REPRS:
        method = getattr(obj, attr, None)
        if mime in data or not callable(method):
            continue
        value = method()
        if isinstance(value, tuple):
            value, metadata[mime] = value
        if value is not None:
            data[mime] = value
    data.setdefault("text/plain", repr(obj))
    return {mime: _as_text(mime, value) for mime, value in data.items()}, metadata


def _as_text(mime, value):
    if isinstance(value, (bytes, bytearray)):
        return b2a_base64(bytes(value), newline=False).decode("ascii")  # images travel base64, as in Jupyter
    if isinstance(value, str):
        return value
    import json  # application/json given as a dict or list
    return json.dumps(value)


def _ask(question):
    """Ask whoever runs the session a yes-or-no question; True when they say yes."""
    return call("input", "ask", {"question": str(question)})


def install(capabilities, namespace):
    """Build the `capsule` module from `configure` and put the granted capabilities into namespace."""
    module = type(sys)("capsule")
    module.__doc__ = "Capabilities this session's policy grants. Use them as file, net, db, env, display(...)."
    module.CapabilityDenied = CapabilityDenied
    module.Capability = Capability
    module.Response = Response
    module.WebSocket = WebSocket
    module.WebSocketClosed = WebSocketClosed
    for name in BUILTIN:
        setattr(module, name, Ungranted(name))
    granted = {}
    for desc in capabilities:
        name = desc["name"]
        short = name.rpartition(".")[2]  # custom.weather is `weather`
        granted[short] = Ungranted(name) if name == "display" else _build(desc)
        setattr(module, short, granted[short])
    display_granted = "display" in granted
    module.display = _display if display_granted else Ungranted("display")
    module.ask = _ask if "input" in granted else Ungranted("input").ask
    if display_granted:
        granted["display"] = _display
    granted.pop("input", None)  # input() and capsule.ask() are how the code uses it
    sys.modules["capsule"] = module
    namespace.update(granted)
    return module
