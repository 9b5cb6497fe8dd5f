"""Listening and connecting on loopback: the errors users meet, and restarts.

Refused connections, unknown hosts, addresses in use, TIME_WAIT after a
restart, Unix socket files (missing directory, stale file, live server), and
the dual-stack listener. Both layers are checked where both can fail the
same way. Port 0 everywhere; a port that is known to be closed is taken from
a socket bound and closed just before.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from iosupport import (
    LOOPBACK_TIMEOUT,
    ipv6_loopback_available,
    short_socket_dir,
    unix_sockets_available,
)

from socketkit import aio, sync
from socketkit.errors import (
    ConnectError,
    HostNotFoundError,
    ListenError,
    SocketkitError,
)

pytestmark = pytest.mark.timeout(30)

needs_unix = pytest.mark.skipif(not unix_sockets_available(), reason="no AF_UNIX here")
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    with short_socket_dir(tmp_path) as directory:
        yield directory


def closed_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A port nothing listens on: bound by us a moment ago, then closed."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def connect_with(layer: str, endpoint: str) -> None:
    """Connect with ``layer`` and close at once (the tests here expect failure)."""
    if layer == "sync":
        with sync.connect(endpoint, connect_timeout=LOOPBACK_TIMEOUT, timeout=LOOPBACK_TIMEOUT):
            return

    async def main() -> None:
        conn = await aio.connect(endpoint, connect_timeout=LOOPBACK_TIMEOUT)
        await conn.aclose()

    asyncio.run(main())


layers = pytest.mark.parametrize("layer", ["sync", "aio"])


# -- connect errors -----------------------------------------------------------


@layers
def test_connection_refused(layer: str) -> None:
    port = closed_port()
    with pytest.raises(ConnectError) as info:
        connect_with(layer, f"127.0.0.1:{port}")
    exc = info.value
    assert str(exc) == f"connection refused by 127.0.0.1:{port} (is a server listening?)"
    assert "refused" in str(exc)
    assert exc.exit_code == 3
    assert exc.errno == errno.ECONNREFUSED
    assert isinstance(exc, ConnectionError)


@needs_ipv6
@layers
def test_connection_refused_ipv6(layer: str) -> None:
    port = closed_port(socket.AF_INET6, "::1")
    with pytest.raises(ConnectError, match=r"^connection refused by \[::1\]:\d+ "):
        connect_with(layer, f"[::1]:{port}")


@layers
def test_unknown_host(layer: str) -> None:
    # .invalid is reserved never to resolve (RFC 6761 section 6.4).
    with pytest.raises(HostNotFoundError) as info:
        connect_with(layer, "no-such-host.invalid:80")
    exc = info.value
    assert str(exc).startswith("cannot resolve host 'no-such-host.invalid'")
    assert "\n" not in str(exc)
    assert exc.exit_code == 2


@needs_unix
@layers
def test_connect_to_a_missing_unix_socket(layer: str, sock_dir: Path) -> None:
    path = sock_dir / "nobody.sock"
    with pytest.raises(ConnectError) as info:
        connect_with(layer, f"unix:{path}")
    assert str(info.value) == f"no socket at unix:{path} (is a server listening?)"
    assert info.value.errno == errno.ENOENT


@needs_unix
@layers
def test_connect_to_a_stale_unix_socket_is_refused(layer: str, sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # the file outlives the socket
    with pytest.raises(ConnectError, match=r"^connection refused by unix:"):
        connect_with(layer, f"unix:{path}")


# -- listen errors ------------------------------------------------------------


def listen_with(layer: str, endpoint: str | int) -> None:
    """Listen with ``layer`` and close at once (the tests here expect failure)."""
    if layer == "sync":
        with sync.open_listener(endpoint):
            return

    async def handler(_conn: aio.Connection) -> None:
        raise AssertionError("no client expected")

    async def main() -> None:
        server = await aio.start_server(handler, endpoint)
        await server.aclose()

    asyncio.run(main())


@layers
def test_address_in_use(layer: str) -> None:
    with sync.open_listener("127.0.0.1:0") as first:
        port = first.port
        with pytest.raises(ListenError) as info:
            listen_with(layer, f"127.0.0.1:{port}")
    exc = info.value
    assert str(exc).startswith(f"address already in use: 127.0.0.1:{port}")
    assert exc.errno == errno.EADDRINUSE
    assert exc.exit_code == 4


def test_address_in_use_on_every_interface() -> None:
    with sync.open_listener(0) as first:
        assert first.port
        with pytest.raises(ListenError, match=r"^address already in use: port"):
            sync.open_listener(first.port)


def test_restart_on_the_same_port_after_a_connection_binds() -> None:
    # The server closes first, so its side of the connection sits in
    # TIME_WAIT; a restarted server must still bind (SO_REUSEADDR).
    with sync.open_listener("127.0.0.1:0") as listener:
        port = listener.port
        with sync.connect(f"127.0.0.1:{port}", connect_timeout=LOOPBACK_TIMEOUT) as client:
            with listener.accept(timeout=LOOPBACK_TIMEOUT) as served:
                client.send_all(b"Hello from client")
                assert served.receive_exactly(17) == b"Hello from client"
                served.send_all(b"Hello from server")
            assert client.receive_some() == b"Hello from server"
            assert client.receive_some() == b""
    # Evidence that TIME_WAIT is really there: a plain bind without
    # SO_REUSEADDR fails (Linux, macOS). Where it does not, the check below
    # still passes but proves less.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
        try:
            plain.bind(("127.0.0.1", port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
    with sync.open_listener(f"127.0.0.1:{port}") as again:
        assert again.port == port
        with (
            sync.connect(f"127.0.0.1:{port}", connect_timeout=LOOPBACK_TIMEOUT) as client,
            again.accept(timeout=LOOPBACK_TIMEOUT) as served,
        ):
            served.send_all(b"back")
            assert client.receive_exactly(4) == b"back"


@needs_unix
@layers
def test_unix_path_in_a_missing_directory(layer: str, sock_dir: Path) -> None:
    path = sock_dir / "no-such-dir" / "s.sock"
    with pytest.raises(ListenError) as info:
        listen_with(layer, f"unix:{path}")
    assert str(info.value) == f"cannot bind unix:{path}: no such file or directory"
    assert info.value.exit_code == 4


@needs_unix
def test_a_stale_unix_socket_file_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(path))
        old.listen()
    assert path.exists()  # the old server is gone, its file is not
    with (
        sync.open_listener(f"unix:{path}") as listener,
        sync.connect(f"unix:{path}", connect_timeout=LOOPBACK_TIMEOUT) as client,
        listener.accept(timeout=LOOPBACK_TIMEOUT) as served,
    ):
        client.send_all(b"hi")
        assert served.receive_exactly(2) == b"hi"


@needs_unix
@layers
def test_a_live_unix_socket_is_in_use(layer: str, sock_dir: Path) -> None:
    path = sock_dir / "live.sock"
    with sync.open_listener(f"unix:{path}") as live:
        with pytest.raises(ListenError) as info:
            listen_with(layer, f"unix:{path}")
        assert str(info.value).startswith(f"address already in use: unix:{path}")
        # Liveness is probed by connecting, so the live server sees one
        # connection that closes at once (a known, harmless side effect).
        with live.accept(timeout=LOOPBACK_TIMEOUT) as probe:
            assert probe.receive_some() == b""
        # The live server's file was left alone: it still takes clients.
        with (
            sync.connect(f"unix:{path}", connect_timeout=LOOPBACK_TIMEOUT) as client,
            live.accept(timeout=LOOPBACK_TIMEOUT) as served,
        ):
            client.send_all(b"still here")
            assert served.receive_exactly(10) == b"still here"


@needs_unix
def test_a_file_that_is_not_a_socket_is_not_removed(sock_dir: Path) -> None:
    path = sock_dir / "data.txt"
    path.write_text("precious")
    with pytest.raises(ListenError, match="not a socket"):
        sync.open_listener(f"unix:{path}")
    assert path.read_text() == "precious"


@pytest.mark.skipif(not os.path.exists("/proc/net/unix"), reason="abstract sockets are Linux's")
def test_abstract_unix_socket() -> None:
    name = f"@socketkit-test-{uuid.uuid4().hex}"
    with sync.open_listener(f"unix:{name}") as listener:
        assert listener.address == f"unix:{name}"
        with (
            sync.connect(f"unix:{name}", connect_timeout=LOOPBACK_TIMEOUT) as client,
            listener.accept(timeout=LOOPBACK_TIMEOUT) as served,
        ):
            assert client.peer == f"unix:{name}"
            client.send_all(b"abstract")
            assert served.receive_exactly(8) == b"abstract"


# -- the dual-stack listener --------------------------------------------------


@needs_ipv6
def test_dual_stack_listener_takes_ipv4_and_ipv6_clients() -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack sockets here")
    with sync.open_listener(0) as listener:
        for target, shown in [("127.0.0.1", "127.0.0.1:"), ("[::1]", "[::1]:")]:
            with (
                sync.connect(f"{target}:{listener.port}", connect_timeout=LOOPBACK_TIMEOUT),
                listener.accept(timeout=LOOPBACK_TIMEOUT) as served,
            ):
                # An IPv4 client shows as IPv4, not as ::ffff:127.0.0.1.
                assert served.peer.startswith(shown)


def test_accept_timeout() -> None:
    with sync.open_listener("127.0.0.1:0") as listener:
        for timeout in (0.05, 0):
            with pytest.raises(SocketkitError) as info:
                listener.accept(timeout=timeout)
            assert isinstance(info.value, TimeoutError)
            assert info.value.phase == "accept"  # type: ignore[attr-defined]


def test_listener_use_after_close() -> None:
    listener = sync.open_listener("127.0.0.1:0")
    listener.close()
    listener.close()
    with pytest.raises(SocketkitError, match="already closed"):
        listener.accept(timeout=LOOPBACK_TIMEOUT)
