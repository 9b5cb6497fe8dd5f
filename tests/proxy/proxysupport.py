"""Targets for proxy tests, on loopback threads, and ``socketkit proxy`` as a subprocess.

- ``echo_target`` (from helpers): echoes every connection, for tunnels.
- ``http_target``: a small HTTP/1.1 origin (``http.server``, threads):
  ``GET /hello`` is ``hello\\n`` with a Content-Length, ``GET /stream`` is
  chunked, ``POST /echo`` answers its body (Content-Length or chunked).
- ``proxy_server``: ``socketkit proxy -p 0 ARGS``, ready at its listening line.
- ``silent_target``: a listener whose accept queue is full, so a connect to
  it hangs until the connecter's own timeout (a connect timeout on loopback).

Every blocking call has ``LOOPBACK_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import LOOPBACK_TIMEOUT, Server, start_server

MESSAGE = b"Hello from client"


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    body = b""
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += handler.rfile.read(size)
        handler.rfile.readline()


class _Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = LOOPBACK_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests look at what the client gets."""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self.path == "/hello":
            seen = self.headers.get("Proxy-Authorization", "-")
            self._send(200, b"hello\n", {"X-Seen-Proxy-Authorization": seen})
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"one ", b"two ", b"three\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"no such page\n")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(self)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(200, b"got " + body)


@contextlib.contextmanager
def http_target() -> Iterator[int]:
    """The HTTP origin described in the module docstring; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(LOOPBACK_TIMEOUT)


@contextlib.contextmanager
def silent_target() -> Iterator[int]:
    """A port where connects hang: backlog 0 and its queue filled, never accepted."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        # Linux drops SYNs once the accept queue holds backlog + 1 connections.
        for _ in range(2):
            filler = socket.socket()
            filler.settimeout(0.5)
            with contextlib.suppress(OSError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@contextlib.contextmanager
def proxy_server(*args: str) -> Iterator[tuple[Server, int]]:
    """``socketkit proxy -p 0 ARGS``; yields it and its port once it listens."""
    with start_server("proxy", "-p", "0", *args) as server:
        yield server, server.port()


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` has open (Linux)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request``, half-close, read until the peer closes."""
    sock.settimeout(LOOPBACK_TIMEOUT)
    sock.sendall(request)
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while data := sock.recv(65536):
        reply += data
    return reply
