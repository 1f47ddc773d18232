#!/usr/bin/python3
"""A real WebSocket server on loopback for net.websocket's tests (run on the host, never in the sandbox).

Usage: websocket_server.py ADDRESS LOGFILE — prints the port it listens on, then serves until killed.
  /echo               echoes every message (text as text, binary as binary), answers a close;
                      the text "close me" makes it close with 1000 "as asked"
  /key                sends "yes" or "no": whether X-Api-Key is "s3cret-value" (never echoes it)
  /big?n=N            sends one binary message of N bytes, then echoes
  /fragments?n=N&k=K  sends one text message of N bytes in K fragments, then echoes
  /huge               sends a frame header announcing 2**62 bytes, then junk, forever
  /close              closes at once with code 4001 and reason "bye"
  /drop               takes one message, then ends the connection without a close frame
  /ping               pings; on the pong, sends "pong received", then echoes
  /reject             answers 403 instead of upgrading
A TLS handshake (wss:// to this plain server) is never answered.
Every handshake's path and headers are appended to LOGFILE as one JSON line, and {"ended": path}
when its connection ends.
"""
import base64
import hashlib
import json
import socketserver
import struct
import sys
from urllib.parse import parse_qs, urlsplit

address, log = sys.argv[1], sys.argv[2]
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_exact(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_frame(stream):
    """(fin, opcode, payload) of one client frame (clients mask theirs)."""
    b0, b1 = read_exact(stream, 2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(stream, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(stream, 8))[0]
    mask = read_exact(stream, 4) if b1 & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(read_exact(stream, length)))
    return bool(b0 & 0x80), b0 & 0x0F, payload


def frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([127]) + struct.pack("!Q", len(payload))
    return head + payload


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        if self.rfile.peek(1)[:1] == b"\x16":  # a TLS ClientHello: never answered, until the client gives up
            self.rfile.read()
            return
        request = self.rfile.readline().decode("latin-1").split()
        headers = {}
        while True:
            line = self.rfile.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        self.path = request[1]
        parts = urlsplit(request[1])
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with open(log, "a") as f:
            f.write(json.dumps({"path": request[1], "headers": headers}) + "\n")
        key = next((v for k, v in headers.items() if k.lower() == "sec-websocket-key"), "")
        if parts.path == "/reject" or not key:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        send = self.wfile.write
        if parts.path == "/key":
            api_key = next((v for k, v in headers.items() if k.lower() == "x-api-key"), "")
            send(frame(1, b"yes" if api_key == "s3cret-value" else b"no"))
        elif parts.path == "/big":
            send(frame(2, b"x" * int(query.get("n", "1000"))))
        elif parts.path == "/fragments":
            n, k = int(query.get("n", "1000")), int(query.get("k", "4"))
            size = -(-n // k)
            chunks = [b"y" * min(size, n - i) for i in range(0, n, size)]
            for i, chunk in enumerate(chunks):
                send(frame(1 if i == 0 else 0, chunk, fin=i == len(chunks) - 1))
        elif parts.path == "/huge":
            send(bytes([0x82, 127]) + struct.pack("!Q", 1 << 62))
            try:
                while True:
                    send(b"z" * 65536)
            except OSError:
                return
        elif parts.path == "/close":
            send(frame(8, struct.pack("!H", 4001) + b"bye"))
        elif parts.path == "/drop":
            read_frame(self.rfile)
            return
        elif parts.path == "/ping":
            send(frame(9, b"are you there"))
        self.echo(send)

    def finish(self):
        with open(log, "a") as f:
            f.write(json.dumps({"ended": urlsplit(getattr(self, "path", "")).path}) + "\n")
        super().finish()

    def echo(self, send):
        message, kind = b"", 0
        try:
            while True:
                fin, opcode, payload = read_frame(self.rfile)
                if opcode == 8:
                    send(frame(8, payload[:2]))
                    return
                if opcode == 10:
                    send(frame(1, b"pong received" if payload == b"are you there" else b"wrong pong"))
                    continue
                if opcode == 9:
                    send(frame(10, payload))
                    continue
                if opcode in (1, 2):
                    message, kind = payload, opcode
                else:
                    message += payload
                if fin and kind == 1 and message == b"close me":
                    send(frame(8, struct.pack("!H", 1000) + b"as asked"))
                elif fin:
                    send(frame(kind, message))
        except (EOFError, OSError):
            return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server((address, 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
