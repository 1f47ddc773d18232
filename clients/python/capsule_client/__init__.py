"""A client for `capsule serve` (docs/server.md), standard library only.

    from capsule_client import Client
    client = Client("http://127.0.0.1:8731", token=open(os.path.expanduser("~/.config/capsule/token")).read().strip())
    with client.session(policy="sandbox") as session:
        print(session.execute("6 * 7").result["text/plain"])     # 42
        for event in session.stream("for i in range(3): print(i)"):
            print(event)

`AsyncClient` has the same methods as coroutines (and `stream` as an async iterator); it runs
the same requests on worker threads.
"""
import asyncio
import http.client
import json
import os
import urllib.parse

__all__ = ["Client", "Session", "Result", "ServerError", "AsyncClient", "AsyncSession"]


class ServerError(Exception):
    """The server refused a request: .status (the HTTP status), .title and .detail (what to do)."""

    def __init__(self, status, title, detail):
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail


class Result:
    """An execution that has ended: .stdout, .stderr, .result (a MIME bundle or None), .displays,
    .error (ename, evalue, traceback, or None), .events, .status and .done (the `done` event)."""

    def __init__(self, answer):
        self.stdout, self.stderr = answer["stdout"], answer["stderr"]
        self.result, self.displays, self.error = answer["result"], answer["displays"], answer["error"]
        self.events, self.done = answer["events"], answer["done"]
        self.status = self.done["status"]

    @property
    def ok(self):
        return self.status == "ok"

    def __repr__(self):
        return f"<Result {self.status}: stdout {len(self.stdout)} chars, result {self.result and self.result.get('text/plain')!r}>"


def default_token():
    """CAPSULE_TOKEN, or the token file capsule serve made."""
    if os.environ.get("CAPSULE_TOKEN"):
        return os.environ["CAPSULE_TOKEN"]
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    with open(os.path.join(config, "capsule", "token")) as f:
        return f.read().strip()


class Client:
    """A capsule server at `url`, reached with `token` (by default CAPSULE_TOKEN or the token file)."""

    def __init__(self, url="http://127.0.0.1:8731", token=None, timeout=600):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._token = token if token is not None else default_token()
        self.timeout = timeout

    def _connection(self):
        kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self.timeout)

    def _send(self, method, path, body=None, accept="application/json"):
        connection = self._connection()
        headers = {"Authorization": f"Bearer {self._token}", "Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        if response.status >= 400:
            text = response.read()
            connection.close()
            try:
                problem = json.loads(text)
            except ValueError:
                problem = {"title": response.reason, "detail": text.decode("utf-8", "replace")}
            raise ServerError(response.status, problem.get("title", response.reason), problem.get("detail", ""))
        return connection, response

    def request(self, method, path, body=None):
        """One request; its JSON answer (None for 204)."""
        connection, response = self._send(method, path, body)
        try:
            text = response.read()
        finally:
            connection.close()
        return json.loads(text) if text else None

    def session(self, policy="sandbox", policy_toml=None):
        """A new session: a level's name, or a policy's TOML text (at most the server's --max-level)."""
        body = {"policy_toml": policy_toml} if policy_toml is not None else {"policy": policy}
        return Session(self, self.request("POST", "/v1/sessions", body))

    def sessions(self):
        return [Session(self, info) for info in self.request("GET", "/v1/sessions")["sessions"]]

    def healthy(self):
        connection = self._connection()
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()


class Session:
    """One sandboxed session on the server; its state persists across executions."""

    def __init__(self, client, info):
        self.client, self.info, self.id = client, info, info["id"]

    def execute(self, code):
        """Run code; returns a Result once it has ended (input() reads end of file: use stream)."""
        return Result(self.client.request("POST", f"/v1/sessions/{self.id}/execute", {"code": code}))

    def stream(self, code, input=None, approve=None):
        """Run code, yielding its events (dicts) as they happen, `done` last. `input(prompt)`
        answers input() (None: end of file), `approve(event)` an ask rule's call (True/False)."""
        connection, response = self.client._send("POST", f"/v1/sessions/{self.id}/execute", {"code": code},
                                                  accept="application/x-ndjson")
        try:
            for line in response:
                event = json.loads(line)
                yield event
                if event["type"] == "input_request":
                    answer = input(event["prompt"]) if input else None
                    self.answer_input(answer)
                elif event["type"] == "approval_request":
                    self.decide(event["id"], bool(approve(event)) if approve else False)
        finally:
            connection.close()

    def interrupt(self):
        self.client.request("POST", f"/v1/sessions/{self.id}/interrupt")

    def answer_input(self, line):
        self.client.request("POST", f"/v1/sessions/{self.id}/input", {"eof": True} if line is None else {"line": line})

    def decide(self, approval, approve, reason=None):
        body = {"approve": approve} if reason is None else {"approve": approve, "reason": reason}
        self.client.request("POST", f"/v1/sessions/{self.id}/approvals/{approval}", body)

    def close(self):
        try:
            self.client.request("DELETE", f"/v1/sessions/{self.id}")
        except ServerError as error:
            if error.status != 404:
                raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Session {self.id} {self.info.get('level')}>"


class AsyncClient:
    """Client's methods as coroutines (each request on a worker thread)."""

    def __init__(self, url="http://127.0.0.1:8731", token=None, timeout=600):
        self._client = Client(url, token, timeout)

    async def session(self, policy="sandbox", policy_toml=None):
        return AsyncSession(await asyncio.to_thread(self._client.session, policy, policy_toml))

    async def sessions(self):
        return [AsyncSession(s) for s in await asyncio.to_thread(self._client.sessions)]


class AsyncSession:
    def __init__(self, session):
        self._session, self.id = session, session.id

    async def execute(self, code):
        return await asyncio.to_thread(self._session.execute, code)

    async def stream(self, code, input=None, approve=None):
        events = self._session.stream(code, input, approve)
        done = object()
        while True:
            event = await asyncio.to_thread(next, events, done)
            if event is done:
                return
            yield event

    async def interrupt(self):
        await asyncio.to_thread(self._session.interrupt)

    async def close(self):
        await asyncio.to_thread(self._session.close)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
