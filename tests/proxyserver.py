"""A tiny proxy server for tests, and the bytes real proxy clients send.

The server: our server machines on a blocking socket, in a thread.

It detects the protocol from the first byte, runs ``SocksServer`` or
``HttpProxyServer``, records every request and every byte the client sent
during the handshake, and then, instead of connecting to the target, echoes
the tunnel back (its own bytes are the target's). ``failure`` makes it
refuse every request instead. Blocking calls have ``LOOPBACK_TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from socketkit.errors import SocketkitError
from socketkit.framing.http_proxy import HttpProxyServer
from socketkit.framing.socks import SocksServer
from socketkit.framing.tunnel import (
    NEED_DATA,
    ProxyKind,
    Rejected,
    TunnelFailure,
    TunnelRequest,
    detect_proxy_protocol,
)

from helpers import LOOPBACK_TIMEOUT

# What ncat 7.93 sends as a proxy client (``ncat --proxy 127.0.0.1:PORT
# --proxy-type socks4|socks5|http [--proxy-auth ...] HOST 80``), byte for
# byte; tests/interop/test_proxy_ncat.py checks them against ncat itself.
NCAT_SOCKS4_IP = b"\x04\x01\x00P\x7f\x00\x00\x01\x00"  # 127.0.0.1 80
NCAT_SOCKS4_USER = b"\x04\x01\x00P\x7f\x00\x00\x01alice\x00"
NCAT_SOCKS4A = b"\x04\x01\x00P\x00\x00\x00\x01\x00example.com\x00"
NCAT_SOCKS5_GREETING = b"\x05\x01\x00"
NCAT_SOCKS5_GREETING_AUTH = b"\x05\x02\x00\x02"
NCAT_CONNECT = b"CONNECT example.com:80 HTTP/1.0\r\n\r\n"
NCAT_CONNECT_V6 = b"CONNECT [::1]:80 HTTP/1.0\r\n\r\n"
# RFC 1928 requests and RFC 1929 credentials as ncat and our client send them.
SOCKS5_CONNECT_NAME = b"\x05\x01\x00\x03\x0bexample.com\x00P"
SOCKS5_CONNECT_V4 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00P"
SOCKS5_CONNECT_V6 = b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x00P"
RFC1929_ALICE = b"\x01\x05alice\x06s3cret"

#: The bound address the test server reports to SOCKS clients.
BOUND = ("192.0.2.1", 1080)


@dataclass
class ProxyLog:
    """What the test server saw: one entry per connection."""

    handshakes: list[bytes] = field(default_factory=list)
    requests: list[TunnelRequest] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _serve_one(
    sock: socket.socket,
    log: ProxyLog,
    authenticate: Callable[[str, str], bool] | None,
    failure: TunnelFailure | None,
) -> None:
    sock.settimeout(LOOPBACK_TIMEOUT)
    seen = b""
    first = sock.recv(1, socket.MSG_PEEK)
    kind = detect_proxy_protocol(first)
    machine: SocksServer | HttpProxyServer
    if kind is ProxyKind.HTTP:
        machine = HttpProxyServer(authenticate=authenticate)
    else:
        machine = SocksServer(authenticate=authenticate)
    try:
        while True:
            event = machine.next_event()
            sock.sendall(machine.data_to_send())
            if event is NEED_DATA:
                data = sock.recv(4096)
                seen += data
                machine.receive_data(data)
                continue
            if isinstance(event, Rejected):
                log.rejections.append(event.reason)
                return
            assert isinstance(event, TunnelRequest), event
            log.requests.append(event)
            if failure is not None:
                machine.refuse(failure)
                sock.sendall(machine.data_to_send())
                return
            machine.accept(BOUND)
            sock.sendall(machine.data_to_send())
            early = machine.trailing_data
            seen = seen[: len(seen) - len(early)] if early else seen
            sock.sendall(early)
            while data := sock.recv(4096):
                sock.sendall(data)
            return
    finally:
        log.handshakes.append(seen)


@contextlib.contextmanager
def proxy_server(
    *,
    authenticate: Callable[[str, str], bool] | None = None,
    failure: TunnelFailure | None = None,
    connections: int = 1,
    silent: bool = False,
) -> Iterator[tuple[int, ProxyLog]]:
    """Serve ``connections`` clients one after another on a loopback port.

    Yields the port and the log. ``silent`` accepts and never answers (for
    timeouts). The thread is joined at the end.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    log = ProxyLog()

    def run() -> None:
        with listener:
            listener.settimeout(LOOPBACK_TIMEOUT)
            for _ in range(connections):
                try:
                    conn, _ = listener.accept()
                except OSError as exc:
                    log.errors.append(str(exc))
                    return
                with conn:
                    try:
                        if silent:
                            conn.settimeout(LOOPBACK_TIMEOUT)
                            conn.recv(4096)
                            conn.recv(4096)  # until the client gives up and closes
                            continue
                        _serve_one(conn, log, authenticate, failure)
                    except (OSError, SocketkitError) as exc:
                        log.errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run, name="test-proxy", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], log
    finally:
        thread.join(LOOPBACK_TIMEOUT)
        assert not thread.is_alive(), "test proxy server still running"
