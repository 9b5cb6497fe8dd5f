"""Proxy handshakes against ncat, both ways (``-m tools``).

- ncat as a proxy client (``--proxy-type socks4|socks5|http``) talks to our
  server machines (tests/proxyserver.py): its handshake bytes must be the
  vectors the unit tests use, and the tunnel must carry data both ways.
- ncat as an HTTP proxy server (``ncat -l --proxy-type http``, with Basic
  and Digest authentication) opens tunnels for our ``HttpConnectClient``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from proxyserver import (
    NCAT_CONNECT,
    NCAT_SOCKS4_IP,
    NCAT_SOCKS4_USER,
    NCAT_SOCKS4A,
    NCAT_SOCKS5_GREETING,
    NCAT_SOCKS5_GREETING_AUTH,
    RFC1929_ALICE,
    SOCKS5_CONNECT_NAME,
    SOCKS5_CONNECT_V4,
    proxy_server,
)
from socketkit import sync
from socketkit.errors import ProxyAuthError
from socketkit.framing.http_proxy import HttpConnectClient
from socketkit.framing.tunnel import ProxyKind, TunnelRequest
from socketkit.proxy_client import handshake

from helpers import LOOPBACK_TIMEOUT, Proc, echo_target, free_port

pytestmark = [pytest.mark.tools, pytest.mark.timeout(60)]

MESSAGE = b"Hello from client"


def _ncat() -> str:
    path = shutil.which("ncat")
    if path is None:
        pytest.skip("ncat is not installed (.ci/run installs it from Debian packages)")
    return path


def _check(user: str, password: str) -> bool:
    return (user, password) == ("alice", "s3cret")


@pytest.mark.parametrize(
    ("args", "target", "handshake_bytes", "user"),
    [
        (["--proxy-type", "socks4"], "127.0.0.1", NCAT_SOCKS4_IP, None),
        (
            ["--proxy-type", "socks4", "--proxy-auth", "alice"],
            "127.0.0.1",
            NCAT_SOCKS4_USER,
            "alice",
        ),
        (["--proxy-type", "socks4", "--proxy-dns", "remote"], "example.com", NCAT_SOCKS4A, None),
        (["--proxy-type", "socks5"], "127.0.0.1", NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_V4, None),
        (
            ["--proxy-type", "socks5", "--proxy-dns", "remote"],
            "example.com",
            NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_NAME,
            None,
        ),
        (
            ["--proxy-type", "socks5", "--proxy-auth", "alice:s3cret", "--proxy-dns", "remote"],
            "example.com",
            NCAT_SOCKS5_GREETING_AUTH + RFC1929_ALICE + SOCKS5_CONNECT_NAME,
            "alice",
        ),
        (["--proxy-type", "http"], "example.com", NCAT_CONNECT, None),
    ],
)
def test_ncat_client_through_our_server_machines(
    args: list[str], target: str, handshake_bytes: bytes, user: str | None
) -> None:
    ncat = _ncat()
    authenticate = _check if "alice:s3cret" in args else None
    with proxy_server(authenticate=authenticate) as (port, log):
        done = subprocess.run(
            [ncat, "--proxy", f"127.0.0.1:{port}", *args, target, "80"],
            input=MESSAGE,
            capture_output=True,
            timeout=LOOPBACK_TIMEOUT,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == MESSAGE  # through the tunnel and back
    assert log.handshakes == [handshake_bytes]
    kind = {4: ProxyKind.SOCKS4, 5: ProxyKind.SOCKS5}.get(handshake_bytes[0], ProxyKind.HTTP)
    assert log.requests == [TunnelRequest(kind, target, 80, user)]


@contextlib.contextmanager
def _ncat_http_proxy(*auth: str) -> Iterator[int]:
    port = free_port()
    with Proc(
        [_ncat(), "-v", "-l", "--proxy-type", "http", *auth, "127.0.0.1", str(port)]
    ) as proxy:
        # ncat 7.93 with --proxy-type listens on every interface whatever
        # address it is given, IPv6 first: wait for the IPv4 socket.
        proxy.search(rf"Listening on (?:0\.0\.0\.0|127\.0\.0\.1):{port}", "err")
        yield port


@pytest.mark.parametrize(
    ("auth", "preemptive_basic"),
    [
        ([], True),
        (["--proxy-auth", "alice:s3cret"], True),
        (["--proxy-auth", "alice:s3cret"], False),
    ],
)
def test_our_client_through_ncat_http_proxy(auth: list[str], preemptive_basic: bool) -> None:
    # preemptive_basic False: ncat challenges with Basic and Digest on an
    # HTTP/1.0 407 and closes; the client answers Digest on a new connection.
    with echo_target() as target, _ncat_http_proxy(*auth) as port:

        def reconnect() -> sync.Connection:
            return sync.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)

        client = HttpConnectClient(
            "127.0.0.1",
            target,
            username="alice" if auth else None,
            password="s3cret" if auth else None,
            preemptive_basic=preemptive_basic,
        )
        tunnel, opened = handshake(reconnect(), client, reconnect=reconnect)
        with tunnel:
            tunnel.send_all(MESSAGE)
            echoed = opened.trailing_data
            while len(echoed) < len(MESSAGE):
                echoed += tunnel.receive_some()
            assert echoed == MESSAGE


def test_our_client_with_wrong_password_through_ncat() -> None:
    with echo_target() as target, _ncat_http_proxy("--proxy-auth", "alice:s3cret") as port:

        def reconnect() -> sync.Connection:
            return sync.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)

        client = HttpConnectClient("127.0.0.1", target, username="alice", password="wrong")
        with reconnect() as conn, pytest.raises(ProxyAuthError, match="407"):
            handshake(conn, client, reconnect=reconnect)
