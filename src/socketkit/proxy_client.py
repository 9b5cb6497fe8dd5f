"""Connect through a SOCKS or HTTP proxy, blocking or asyncio: the public face.

Three ways, from the simplest:

- ``sync.connect(target, proxy=Proxy(...))`` (and ``aio.connect``): a
  connection to the target like any other, the proxy an option of the
  endpoint; the target's first bytes are already in its buffer.
- ``connect_via_proxy`` and its twin ``aconnect_via_proxy``: decide where
  the target's name is resolved (``tunnel.plan_target``), open the
  connection to the proxy and run the handshake; they also return the
  ``TunnelOpen`` event (the proxy's bound address).
- ``handshake`` and ``ahandshake``: only the handshake, over a connection
  the caller opened (TCP, TLS or a Unix socket alike).

Bytes the proxy sent after its reply are the tunnel's first bytes; with the
last two they are in ``TunnelOpen.trailing_data``, not in the connection,
so hand them to the application before reading from the connection again.

The handshake loops and ``Proxy`` live in ``socketkit._tunnel``, under
``sync`` and ``aio`` (which use them for ``proxy=``); this module adds the
calls that return connections.
"""

from __future__ import annotations

from . import aio, sync
from ._timeouts import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT
from ._tunnel import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    AsyncStream,
    HandshakeSteps,
    Proxy,
    SyncStream,
    ahandshake,
    aopen_proxy_socket,
    aresolve_target,
    handshake,
    open_proxy_socket,
    resolve_target,
    tunnel_client,
)
from .address import Endpoint
from .framing.tunnel import DnsPolicy, ProxyKind, TunnelOpen

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "AsyncStream",
    "HandshakeSteps",
    "Proxy",
    "SyncStream",
    "aconnect_via_proxy",
    "ahandshake",
    "aopen_proxy_socket",
    "connect_via_proxy",
    "handshake",
    "open_proxy_socket",
    "resolve_target",
    "tunnel_client",
]


def connect_via_proxy(
    proxy: Endpoint | str,
    kind: ProxyKind,
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    dns: DnsPolicy = "remote",
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[sync.Connection, TunnelOpen]:
    """Open a connection to ``host:port`` through the proxy at ``proxy``.

    Args:
        proxy: the proxy's endpoint (``host:port``, ``[v6]:port``, ``unix:/p``).
        kind: its protocol.
        host, port: the target.
        username, password: credentials for the proxy (SOCKS4: a user id only).
        dns: where the target's name is resolved (``tunnel.DnsPolicy``); the
            default lets the proxy resolve it, so names the client cannot
            resolve (and its DNS traffic) stay on the proxy's side.
        connect_timeout: seconds to connect to the proxy.
        timeout: the default timeout of each later call on the connection.
        handshake_timeout: seconds for the whole handshake.

    Returns:
        The tunnel, a connection to close, and the ``TunnelOpen`` event,
        whose ``trailing_data`` are the target's first bytes.

    Raises:
        ProxyError: the proxy refused, wants other credentials, could not
            reach the target, or speaks another protocol.
        ConnectError, SocketTimeoutError, AddressError: as ``sync.connect``,
            for the proxy; HostNotFoundError also for a target resolved here.
    """
    client = tunnel_client(
        kind, resolve_target(kind, host, port, dns), port, username=username, password=password
    )

    def reconnect() -> sync.Connection:
        return sync.connect(proxy, connect_timeout=connect_timeout, timeout=timeout)

    conn = reconnect()
    try:
        return handshake(conn, client, reconnect=reconnect, handshake_timeout=handshake_timeout)
    except BaseException:
        conn.close()
        raise


async def aconnect_via_proxy(
    proxy: Endpoint | str,
    kind: ProxyKind,
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    dns: DnsPolicy = "remote",
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[aio.Connection, TunnelOpen]:
    """The asyncio twin of ``connect_via_proxy`` (resolution runs in a thread)."""
    target = await aresolve_target(kind, host, port, dns)
    client = tunnel_client(kind, target, port, username=username, password=password)

    async def reconnect() -> aio.Connection:
        return await aio.connect(proxy, connect_timeout=connect_timeout, timeout=timeout)

    conn = await reconnect()
    try:
        return await ahandshake(
            conn, client, reconnect=reconnect, handshake_timeout=handshake_timeout
        )
    except BaseException:
        await conn.aclose()
        raise
