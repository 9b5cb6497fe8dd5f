"""Echo server on socketserver.ThreadingTCPServer: one thread per connection.

python threading_echo.py [--port 0]
"""

from __future__ import annotations

import contextlib
import socket
import socketserver

from _common import BACKLOG, READ_SIZE, announce, parse_args, prepare


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := sock.recv(READ_SIZE):
                sock.sendall(data)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = BACKLOG


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    prepare()
    with Server((args.host, args.port), EchoHandler) as server:
        announce(server.server_address[1])
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
