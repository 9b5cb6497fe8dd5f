"""The blocking and asyncio layers have the same features and the same errors.

Both are fill loops over one stream core (``socketkit._stream``); these
checks cover what the conformance suite does not reach: TLS (connect,
half-close, a handshake with a peer that does not speak it), the detail of
a send that failed halfway, and connect failures, each asserted to read the
same in both layers.

Real loopback sockets on port 0; the TLS peer is a plain ``ssl`` server in
a thread; every blocking call has a timeout from ``LOOPBACK_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from iosupport import LOOPBACK_TIMEOUT, SHORT_TIMEOUT, AioFacade, AioRunner, Background, sock_of
from test_stream_conformance import Pair, pair  # noqa: F401  (the six-flavour fixture)

from socketkit import aio, sync
from socketkit._sockets import retry_refused
from socketkit.errors import ConnectError, SocketTimeoutError, TLSError, UnsupportedError
from socketkit.tls import TLSSettings, client_context, self_signed_pem, server_context

pytestmark = pytest.mark.timeout(30)

LAYERS = ["sync", "aio"]

Connect = Callable[..., Any]


@pytest.fixture(params=LAYERS)
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """``connect(endpoint, **options)`` of one layer, returning a blocking face."""
    if request.param == "sync":
        yield sync.connect
        return
    runner = AioRunner(asyncio.new_event_loop)
    try:

        def aio_connect(endpoint: str, **options: Any) -> AioFacade:
            return AioFacade(runner.run(aio.connect(endpoint, **options)), runner)

        yield aio_connect
    finally:
        runner.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cert_pem, key_pem, _fingerprint = self_signed_pem()
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key


@contextlib.contextmanager
def one_client_server(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP listener whose first client ``serve`` gets (in a thread); yields the port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(LOOPBACK_TIMEOUT)

        def accept_one() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(LOOPBACK_TIMEOUT)
                serve(conn)

        server = Background(accept_one, name="server")
        yield listener.getsockname()[1]
        server.result()


def tls_echo(context: ssl.SSLContext) -> Callable[[socket.socket], None]:
    """Serve one TLS client: echo one line, then wait for the client to close."""

    def serve(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            line = b""
            while not line.endswith(b"\n"):
                chunk = tls.recv(1024)
                if not chunk:
                    return
                line += chunk
            tls.sendall(line)
            with contextlib.suppress(OSError):  # the client's close, with or without close_notify
                tls.recv(1024)

    return serve


def insecure_client() -> ssl.SSLContext:
    return client_context(TLSSettings(verify=False))


@pytest.fixture
def tls_conn(connect: Connect, certificate: tuple[Path, Path]) -> Iterator[tuple[Any, int]]:
    """A TLS connection of the layer under test to a one-line TLS echo server, and its port."""
    cert, key = certificate
    context = server_context(TLSSettings(certfile=str(cert), keyfile=str(key)))
    with one_client_server(tls_echo(context)) as port:
        conn = connect(
            f"127.0.0.1:{port}",
            ssl_context=insecure_client(),
            connect_timeout=LOOPBACK_TIMEOUT,
            timeout=LOOPBACK_TIMEOUT,
        )
        with conn:
            yield conn, port


def test_tls_round_trip(tls_conn: tuple[Any, int]) -> None:
    conn, _port = tls_conn
    conn.send_all(b"over TLS\n")
    assert conn.receive_line() == b"over TLS"


def test_half_close_over_tls_is_unsupported(tls_conn: tuple[Any, int]) -> None:
    conn, port = tls_conn
    with pytest.raises(UnsupportedError) as info:
        conn.shutdown_write()
    assert str(info.value) == (
        f"half-close over TLS is not supported on the connection to 127.0.0.1:{port}"
    )
    conn.send_all(b"still open\n")  # nothing was shut down
    assert conn.receive_line() == b"still open"


def test_tls_handshake_with_a_plain_peer(connect: Connect) -> None:
    def plain(conn: socket.socket) -> None:
        conn.recv(1024)  # the ClientHello
        conn.sendall(b"Hello from server")

    with one_client_server(plain) as port, pytest.raises(TLSError) as info:
        connect(
            f"127.0.0.1:{port}",
            ssl_context=insecure_client(),
            connect_timeout=LOOPBACK_TIMEOUT,
        )
    assert str(info.value).startswith(f"TLS: handshake with 127.0.0.1:{port} failed: ")
    assert info.value.exit_code == 3


def test_connect_refused_reads_the_same(connect: Connect) -> None:
    with socket.socket() as reserved:  # bound, never listening: connect is refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        with pytest.raises(ConnectError) as info:
            connect(f"127.0.0.1:{port}", connect_timeout=LOOPBACK_TIMEOUT)
    assert str(info.value) == f"connection refused by 127.0.0.1:{port} (is a server listening?)"
    assert info.value.exit_code == 3


def test_connect_refused_by_a_name_names_the_address(connect: Connect) -> None:
    # A host name is resolved (off the event loop in aio) and each address tried.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        with pytest.raises(ConnectError) as info:
            connect(f"localhost:{port}", connect_timeout=LOOPBACK_TIMEOUT)
    message = str(info.value)
    assert message.startswith(f"connection refused by localhost:{port} ("), message
    assert message.endswith(f":{port}) (is a server listening?)"), message


def test_send_timeout_says_how_much_was_sent(pair: Pair) -> None:  # noqa: F811
    a = pair.a  # pair.b never reads
    sock_of(a).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    total = 16 * 1024 * 1024
    with pytest.raises(SocketTimeoutError) as info:
        a.send_all(b"\0" * total, timeout=SHORT_TIMEOUT)
    message = str(info.value)
    assert message.endswith(f" of {total} bytes sent)"), message
    sent = int(message.rsplit("(", 1)[1].split(" ")[0])
    assert 0 < sent < total


# -- a server that is still starting -------------------------------------------------


def _connect_then_listen(connect: Callable[[int], str]) -> str:
    """Start ``connect(port)`` while nobody listens on ``port``, then listen.

    The client starts first and is refused (the probe shows the port refuses)
    until the listener opens; with ``wait_for_server`` it must get through.
    """
    listener = socket.socket()
    with listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        task = Background(lambda: connect(port))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT).close()
        listener.listen(1)
        listener.settimeout(LOOPBACK_TIMEOUT)
        peer, _ = listener.accept()
        peer.close()
        result: str = task.result()
    return result


def test_connect_waits_for_a_server_that_is_starting_sync_and_aio() -> None:
    def with_sync(port: int) -> str:
        with sync.connect(f"127.0.0.1:{port}", wait_for_server=LOOPBACK_TIMEOUT) as conn:
            return conn.peer

    async def with_aio(port: int) -> str:
        conn = await aio.connect(f"127.0.0.1:{port}", wait_for_server=LOOPBACK_TIMEOUT)
        await conn.aclose()
        return conn.peer

    for connect in (with_sync, lambda port: asyncio.run(with_aio(port))):
        assert _connect_then_listen(connect).startswith("127.0.0.1:")


def test_only_a_refusal_is_retried_and_only_until_the_deadline() -> None:
    refused = ConnectError("refused", errno=errno.ECONNREFUSED)
    no_file = ConnectError("no socket file", errno=errno.ENOENT)
    unreachable = ConnectError("unreachable", errno=errno.ENETUNREACH)
    later = time.monotonic() + 60
    assert retry_refused(refused, later)
    assert retry_refused(no_file, later)
    assert not retry_refused(unreachable, later)
    assert not retry_refused(refused, time.monotonic())


def test_connect_without_wait_fails_at_once_when_refused() -> None:
    probe = socket.socket()
    with probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(ConnectError) as sync_err:
            sync.connect(f"127.0.0.1:{port}")
        with pytest.raises(ConnectError) as aio_err:
            asyncio.run(aio.connect(f"127.0.0.1:{port}"))
    assert str(sync_err.value) == str(aio_err.value)
