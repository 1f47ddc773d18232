#!/usr/bin/python3
"""A real HTTP server on loopback for the net capability's tests (run on the host, never in the sandbox).

Usage: http_server.py ADDRESS LOGFILE — prints the port it listens on, then serves until killed.
  /hello            200 "hello over http"
  /json             200 {"answer": 42}
  /big?n=N          200, N bytes
  /redirect?to=URL  302 to URL
  /key              200 "yes" or "no": whether X-Api-Key is "s3cret-value" (never echoes it)
  /slow?s=S         sleeps S seconds first
Every request's method, path and headers are appended to LOGFILE as one JSON line.
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

address, log = sys.argv[1], sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with open(log, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                "body": body.decode("utf-8", "replace")}) + "\n")
        if parts.path == "/hello":
            return self.answer(200, b"hello over http", [("Content-Type", "text/plain; charset=utf-8")])
        if parts.path == "/json":
            return self.answer(200, b'{"answer": 42}', [("Content-Type", "application/json")])
        if parts.path == "/big":
            return self.answer(200, b"x" * int(query.get("n", "1000")))
        if parts.path == "/redirect":
            return self.answer(302, b"", [("Location", query["to"])])
        if parts.path == "/key":
            return self.answer(200, b"yes" if self.headers.get("X-Api-Key") == "s3cret-value" else b"no")
        if parts.path == "/slow":
            time.sleep(float(query.get("s", "5")))
            return self.answer(200, b"late")
        if parts.path == "/echo":
            return self.answer(200, body)
        self.answer(404, b"not here")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer((address, 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
