"""Proxy client handshakes and connect_via_proxy over loopback, blocking and asyncio.

The proxy is tests/proxyserver.py: our server machines in a thread, echoing
the tunnel instead of connecting to the target.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest

from proxyserver import BOUND, proxy_server
from socketkit import aio, sync
from socketkit.errors import (
    AddressError,
    HostNotFoundError,
    ProxyAuthError,
    ProxyRefusedError,
    ProxyTargetError,
    SocketTimeoutError,
)
from socketkit.framing.http_proxy import HttpConnectClient
from socketkit.framing.socks import SocksClient
from socketkit.framing.tunnel import (
    DnsPolicy,
    ProxyKind,
    TunnelClient,
    TunnelFailure,
    TunnelRequest,
)
from socketkit.proxy_client import aconnect_via_proxy, ahandshake, connect_via_proxy, handshake

from helpers import LOOPBACK_TIMEOUT

MESSAGE = b"Hello from client"
TIMED_OUT = r"^proxy handshake to 127\.0\.0\.1:\d+ timed out after 0\.2 s"


def _connect(port: int) -> sync.Connection:
    return sync.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)


def _check(user: str, password: str) -> bool:
    return (user, password) == ("alice", "s3cret")


def _client(kind: str, host: str, auth: bool) -> TunnelClient:
    credentials: dict[str, Any] = {"username": "alice", "password": "s3cret"} if auth else {}
    if kind == "http":
        return HttpConnectClient(host, 8080, **credentials)
    version: Literal[4, 5] = 4 if kind == "socks4" else 5
    if version == 4 and auth:
        credentials = {"username": "alice"}
    return SocksClient(version, host, 8080, **credentials)


@pytest.mark.parametrize(
    ("kind", "host", "auth"),
    [
        ("socks4", "127.0.0.1", False),
        ("socks4", "example.com", False),
        ("socks5", "example.com", False),
        ("socks5", "::1", True),
        ("http", "example.com", False),
        ("http", "192.0.2.9", True),
    ],
)
def test_sync_handshake_then_tunnel(kind: str, host: str, auth: bool) -> None:
    authenticate = _check if auth and kind != "socks4" else None
    with (
        proxy_server(authenticate=authenticate) as (port, log),
        _connect(port) as conn,
    ):
        tunnel, opened = handshake(conn, _client(kind, host, auth))
        assert tunnel is conn
        assert opened.bound == (BOUND if kind != "http" else None)
        conn.send_all(MESSAGE)
        conn.shutdown_write()
        echoed = opened.trailing_data
        while data := conn.receive_some():
            echoed += data
        assert echoed == MESSAGE
    expected_kind = ProxyKind.HTTP if kind == "http" else ProxyKind(kind)
    user = "alice" if auth else None
    assert log.requests == [TunnelRequest(expected_kind, host, 8080, user)]
    assert not log.errors


def test_sync_http_digest_or_basic_after_a_challenge_reconnects() -> None:
    with proxy_server(authenticate=_check, connections=2) as (port, log):
        opened_connections: list[sync.Connection] = []

        def reconnect() -> sync.Connection:
            conn = sync.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)
            opened_connections.append(conn)
            return conn

        client = HttpConnectClient(
            "example.com", 80, username="alice", password="s3cret", preemptive_basic=False
        )
        first = sync.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)
        tunnel, _ = handshake(first, client, reconnect=reconnect)
        with tunnel:
            assert first.closed
            assert tunnel is opened_connections[0]
            tunnel.send_all(MESSAGE)
            assert tunnel.receive_exactly(len(MESSAGE)) == MESSAGE
    assert log.rejections == ["HTTP 407: credentials missing"]
    assert log.requests == [TunnelRequest(ProxyKind.HTTP, "example.com", 80, "alice")]


def test_sync_challenge_without_reconnect_is_an_auth_error() -> None:
    with proxy_server(authenticate=_check) as (port, _log):
        client = HttpConnectClient(
            "example.com", 80, username="alice", password="s3cret", preemptive_basic=False
        )
        with (
            _connect(port) as conn,
            pytest.raises(ProxyAuthError, match="closed the connection after its"),
        ):
            handshake(conn, client)


def test_sync_refusal_names_the_reply() -> None:
    with (
        proxy_server(failure=TunnelFailure.CONNECTION_REFUSED) as (port, _log),
        _connect(port) as conn,
        pytest.raises(ProxyTargetError) as info,
    ):
        handshake(conn, SocksClient(5, "example.com", 80))
    # The machine does not know the proxy's address; the handshake names it.
    assert str(info.value) == (
        f"SOCKS5 proxy 127.0.0.1:{port} could not reach example.com:80: "
        "connection refused (reply 5)"
    )
    assert info.value.reply == 5
    assert info.value.proxy == f"127.0.0.1:{port}"


def test_sync_silent_proxy_times_out() -> None:
    with (
        proxy_server(silent=True) as (port, _log),
        _connect(port) as conn,
        pytest.raises(SocketTimeoutError, match=TIMED_OUT),
    ):
        handshake(conn, SocksClient(5, "example.com", 80), handshake_timeout=0.2)


@pytest.mark.parametrize("kind", ["socks4", "socks5", "http"])
def test_aio_handshake_then_tunnel(kind: str) -> None:
    async def main() -> bytes:
        conn = await aio.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)
        async with conn:
            tunnel, opened = await ahandshake(conn, _client(kind, "example.com", False))
            await tunnel.send_all(MESSAGE)
            return opened.trailing_data + await tunnel.receive_exactly(len(MESSAGE))

    with proxy_server() as (port, log):
        assert asyncio.run(main()) == MESSAGE
    assert [r.host for r in log.requests] == ["example.com"]


def test_aio_reconnect_and_timeout() -> None:
    async def digest(port: int) -> bytes:
        async def reconnect() -> aio.Connection:
            return await aio.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)

        client = HttpConnectClient(
            "example.com", 80, username="alice", password="s3cret", preemptive_basic=False
        )
        tunnel, _ = await ahandshake(await reconnect(), client, reconnect=reconnect)
        async with tunnel:
            await tunnel.send_all(MESSAGE)
            return await tunnel.receive_exactly(len(MESSAGE))

    async def stall(port: int) -> None:
        conn = await aio.connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT)
        async with conn:
            await ahandshake(conn, SocksClient(4, "example.com", 80), handshake_timeout=0.2)

    with proxy_server(authenticate=_check, connections=2) as (port, _log):
        assert asyncio.run(digest(port)) == MESSAGE
    with (
        proxy_server(silent=True) as (port, _log),
        pytest.raises(SocketTimeoutError, match=TIMED_OUT),
    ):
        asyncio.run(stall(port))


@pytest.mark.parametrize(
    ("kind", "host", "dns", "sent"),
    [
        (ProxyKind.SOCKS4, "localhost", "local", "127.0.0.1"),
        (ProxyKind.SOCKS4, "localhost", "remote", "localhost"),
        (ProxyKind.SOCKS5, "localhost", "both", "127.0.0.1"),
        (ProxyKind.SOCKS5, "no-such-host.invalid", "both", "no-such-host.invalid"),
        (ProxyKind.HTTP, "192.0.2.9", "none", "192.0.2.9"),
    ],
)
def test_connect_via_proxy_resolves_per_policy(
    kind: ProxyKind, host: str, dns: DnsPolicy, sent: str
) -> None:
    with proxy_server() as (port, log):
        tunnel, opened = connect_via_proxy(
            f"127.0.0.1:{port}", kind, host, 7, dns=dns, timeout=LOOPBACK_TIMEOUT
        )
        with tunnel:
            tunnel.send_all(MESSAGE)
            assert opened.trailing_data + tunnel.receive_exactly(len(MESSAGE)) == MESSAGE
    assert [(r.kind, r.host, r.port) for r in log.requests] == [(kind, sent, 7)]


def test_connect_via_proxy_failures_close_the_connection() -> None:
    with pytest.raises(AddressError, match="without DNS"):
        connect_via_proxy("127.0.0.1:9", ProxyKind.SOCKS5, "example.com", 80, dns="none")
    with pytest.raises(HostNotFoundError):
        connect_via_proxy("127.0.0.1:9", ProxyKind.SOCKS5, "no-such-host.invalid", 80, dns="local")
    with (
        proxy_server(failure=TunnelFailure.NOT_ALLOWED) as (port, _log),
        pytest.raises(
            ProxyRefusedError,
            match=r"^HTTP proxy 127\.0\.0\.1:\d+ refused CONNECT example\.com:80: 403",
        ),
    ):
        connect_via_proxy(f"127.0.0.1:{port}", ProxyKind.HTTP, "example.com", 80)
    # The descriptor fixture checks that the refused connection was closed.


def test_aconnect_via_proxy_with_digest_reconnect() -> None:
    async def main(port: int) -> bytes:
        tunnel, _ = await aconnect_via_proxy(
            f"127.0.0.1:{port}",
            ProxyKind.HTTP,
            "localhost",
            80,
            username="alice",
            password="s3cret",
            dns="local",
        )
        async with tunnel:
            await tunnel.send_all(MESSAGE)
            return await tunnel.receive_exactly(len(MESSAGE))

    # Basic up front: one connection suffices.
    with proxy_server(authenticate=_check) as (port, log):
        assert asyncio.run(main(port)) == MESSAGE
    assert log.requests == [TunnelRequest(ProxyKind.HTTP, "127.0.0.1", 80, "alice")]
