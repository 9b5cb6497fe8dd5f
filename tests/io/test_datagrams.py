"""Datagram sockets on loopback: UDP over IPv4 and IPv6, Unix datagrams.

One receive is one datagram; oversized datagrams fail loudly on both sides
(before sending, and on receipt instead of a silent cut); a request with no
server ends within a bounded time. A server thread answers each request; it
is bound before it starts, so no readiness signal is needed beyond that.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from iosupport import (
    LOOPBACK_TIMEOUT,
    SHORT_TIMEOUT,
    TIMEOUT_SLACK,
    Background,
    ipv6_loopback_available,
    short_socket_dir,
    unix_sockets_available,
)

from socketkit import sync
from socketkit.errors import (
    ClosedError,
    ConnectError,
    ListenError,
    MessageTooLargeError,
    SocketTimeoutError,
)
from socketkit.sync import MAX_UDP_PAYLOAD, DatagramSocket

pytestmark = pytest.mark.timeout(30)

#: Unix datagram clients need an address to be answered at; Linux's autobind
#: gives them one (see ``_sockets.connect_socket``), elsewhere it is refused.
needs_unix_datagram_clients = pytest.mark.skipif(
    not (unix_sockets_available() and sys.platform.startswith("linux")),
    reason="Unix datagram clients need Linux",
)


def _transports() -> list[object]:
    return [
        pytest.param("udp4", id="udp4"),
        pytest.param(
            "udp6",
            id="udp6",
            marks=pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback"),
        ),
        pytest.param("unix", id="unix-dgram", marks=needs_unix_datagram_clients),
    ]


@pytest.fixture(params=_transports())
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[DatagramSocket, str]]:
    """A bound datagram server and the endpoint a client reaches it at."""
    with short_socket_dir(tmp_path) as directory:
        if request.param == "udp4":
            listen, target = "127.0.0.1:0", "127.0.0.1:{port}"
        elif request.param == "udp6":
            listen, target = "[::1]:0", "[::1]:{port}"
        else:
            listen = target = f"unix:{directory / 'dgram.sock'}"
        with sync.open_datagram_server(
            listen, timeout=LOOPBACK_TIMEOUT, max_datagram_size=1000
        ) as srv:
            yield srv, target.format(port=srv.port)


def client_for(target: str, **kwargs: object) -> DatagramSocket:
    return sync.open_datagram_client(target, timeout=LOOPBACK_TIMEOUT, **kwargs)  # type: ignore[arg-type]


def answer(srv: DatagramSocket, count: int = 1) -> Background:
    """Answer ``count`` requests in a thread, each with b"re:" + the request."""

    def serve() -> list[bytes]:
        seen = []
        for _ in range(count):
            data, address = srv.receive_from(timeout=LOOPBACK_TIMEOUT)
            seen.append(data)
            srv.send_to(b"re:" + data, address)
        return seen

    return Background(serve, name="datagram-server")


def test_request_and_reply(server: tuple[DatagramSocket, str]) -> None:
    srv, target = server
    replies = answer(srv, count=3)
    with client_for(target) as client:
        assert client.peer == target
        assert client.request(b"ping", timeout=LOOPBACK_TIMEOUT, retries=0) == b"re:ping"
        # One datagram is one message: boundaries survive, empty ones too.
        client.send(b"")
        client.send(b"x" * 997)  # the reply is 1000 bytes, the server's maximum
        assert client.receive() == b"re:"
        assert client.receive() == b"re:" + b"x" * 997
    assert replies.result() == [b"ping", b"", b"x" * 997]


def test_sender_address_is_formatted(server: tuple[DatagramSocket, str]) -> None:
    from socketkit.address import format_sockaddr

    srv, target = server
    with client_for(target) as client:
        client.send(b"who")
        data, address = srv.receive_from(timeout=LOOPBACK_TIMEOUT)
        shown = format_sockaddr(address)
        assert data == b"who"
        if target.startswith("unix:"):
            assert shown.startswith("unix:@")  # an autobound client
        else:
            assert shown == client.local


def test_too_large_to_send_fails_before_sending(server: tuple[DatagramSocket, str]) -> None:
    srv, target = server
    with client_for(target) as client:
        assert client.max_datagram_size == MAX_UDP_PAYLOAD == 65507
        with pytest.raises(MessageTooLargeError) as info:
            client.send(b"x" * (MAX_UDP_PAYLOAD + 1))
        assert info.value.remote is False
        assert (info.value.size, info.value.limit) == (65508, 65507)
        assert "65508 bytes is larger than one datagram" in str(info.value)
        # Nothing went out: the next datagram the server sees is the marker.
        client.send(b"marker")
        assert srv.receive(timeout=LOOPBACK_TIMEOUT) == b"marker"


def test_oversized_datagram_received_is_an_error_not_a_cut(
    server: tuple[DatagramSocket, str],
) -> None:
    srv, target = server  # the server accepts at most 1000 bytes
    with client_for(target) as client:
        client.send(b"a" * 1000)
        client.send(b"b" * 1001)
        client.send(b"after")
        assert srv.receive(timeout=LOOPBACK_TIMEOUT) == b"a" * 1000
        with pytest.raises(MessageTooLargeError) as info:
            srv.receive(timeout=LOOPBACK_TIMEOUT)
        assert info.value.limit == 1000
        assert info.value.remote is True
        assert "over the limit of 1000 bytes (dropped)" in str(info.value)
        # The oversized datagram was consumed whole; the next one is intact.
        assert srv.receive(timeout=LOOPBACK_TIMEOUT) == b"after"


def test_receive_timeout(server: tuple[DatagramSocket, str]) -> None:
    srv, _target = server
    for timeout in (SHORT_TIMEOUT, 0):
        started = time.monotonic()
        with pytest.raises(SocketTimeoutError) as info:
            srv.receive(timeout=timeout)
        assert time.monotonic() - started < timeout + TIMEOUT_SLACK
        assert info.value.phase == "receive"
        assert isinstance(info.value, TimeoutError)


def test_use_after_close(server: tuple[DatagramSocket, str]) -> None:
    _srv, target = server
    client = client_for(target)
    client.close()
    client.close()
    with pytest.raises(ClosedError):
        client.send(b"x")
    with pytest.raises(ClosedError):
        client.receive()


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(socket.AF_INET, id="udp4"),
        pytest.param(
            socket.AF_INET6,
            id="udp6",
            marks=pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback"),
        ),
    ],
)
def test_request_with_no_server_ends_in_bounded_time(family: int) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    target = f"{host}:{port}" if family == socket.AF_INET else f"[{host}]:{port}"
    timeout, retries = 0.2, 1
    with client_for(target) as client:
        started = time.monotonic()
        # ICMP port unreachable gives ConnectError at once; where it is not
        # delivered, each try times out instead.
        with pytest.raises((ConnectError, SocketTimeoutError)) as info:
            client.request(b"anyone?", timeout=timeout, retries=retries)
        elapsed = time.monotonic() - started
    assert elapsed < (1 + retries) * timeout + TIMEOUT_SLACK
    assert "after 2 tries" in str(info.value)
    assert "is a server running?" in str(info.value)


@needs_unix_datagram_clients
def test_a_live_unix_datagram_server_is_not_replaced(tmp_path: Path) -> None:
    with short_socket_dir(tmp_path) as directory:
        path = directory / "dgram.sock"
        with sync.open_datagram_server(f"unix:{path}", timeout=LOOPBACK_TIMEOUT) as live:
            with pytest.raises(ListenError, match=r"^address already in use"):
                sync.open_datagram_server(f"unix:{path}").close()
            # The live server still owns the path.
            with client_for(f"unix:{path}") as client:
                client.send(b"still mine")
                assert live.receive(timeout=LOOPBACK_TIMEOUT) == b"still mine"


@needs_unix_datagram_clients
def test_a_stale_unix_datagram_socket_file_is_replaced(tmp_path: Path) -> None:
    with short_socket_dir(tmp_path) as directory:
        path = directory / "dgram.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as old:
            old.bind(str(path))
        assert path.exists()
        with (
            sync.open_datagram_server(f"unix:{path}", timeout=LOOPBACK_TIMEOUT) as srv,
            client_for(f"unix:{path}") as client,
        ):
            client.send(b"new")
            assert srv.receive(timeout=LOOPBACK_TIMEOUT) == b"new"
