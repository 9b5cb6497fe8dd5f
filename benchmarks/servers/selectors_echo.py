"""Echo server on a plain ``selectors`` loop with non-blocking sockets.

    python selectors_echo.py [--port 0] [--udp]

TCP: each read is sent straight back; what the kernel does not take is kept,
reading from that connection stops and write-readiness is watched until the
backlog is out (the same discipline as the C server).  UDP: receive until
EAGAIN, reply to each sender.
"""

from __future__ import annotations

import contextlib
import selectors
import socket

from _common import BACKLOG, READ_SIZE, announce, parse_args, prepare

EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def serve_tcp(host: str, port: int) -> None:
    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(BACKLOG)
    lsock.setblocking(False)
    sel.register(lsock, EVENT_READ, None)
    pending: dict[socket.socket, memoryview] = {}
    announce(lsock.getsockname()[1])

    def close(sock: socket.socket) -> None:
        sel.unregister(sock)
        pending.pop(sock, None)
        sock.close()

    while True:
        for key, mask in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if key.data is None:
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(conn, EVENT_READ, True)
                continue
            try:
                if mask & EVENT_WRITE:
                    rest = pending[sock]
                    n = sock.send(rest)
                    if n < len(rest):
                        pending[sock] = rest[n:]
                    else:
                        del pending[sock]
                        sel.modify(sock, EVENT_READ, True)
                    continue
                data = sock.recv(READ_SIZE)
                if not data:
                    close(sock)
                    continue
                try:
                    n = sock.send(data)
                except BlockingIOError:
                    n = 0
                if n < len(data):
                    pending[sock] = memoryview(data)[n:]
                    sel.modify(sock, EVENT_WRITE, True)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                close(sock)


def serve_udp(host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, EVENT_READ)
    announce(sock.getsockname()[1])
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        sel.select()
        while True:
            try:
                data, addr = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error queued by an earlier reply
            try:  # noqa: SIM105 (hot loop: cheaper than contextlib.suppress)
                sendto(data, addr)
            except OSError:
                pass  # full buffer: the datagram is lost, as UDP allows


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], udp_flag=True)
    prepare()
    with contextlib.suppress(KeyboardInterrupt):
        (serve_udp if args.udp else serve_tcp)(args.host, args.port)
