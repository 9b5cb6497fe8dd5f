"""A tiny proxy server for tests: our server machines on a blocking socket, in a thread.

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
