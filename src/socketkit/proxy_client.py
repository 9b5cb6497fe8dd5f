"""Run a proxy client handshake over an open connection, blocking or asyncio.

The handshakes themselves are sans-I/O machines (``socketkit.framing.socks``
and ``socketkit.framing.http_proxy``); this module is the fill loop that
feeds one from a ``socketkit.sync.Connection`` or ``socketkit.aio.Connection``
through their public API only (``send_all``, ``receive_some``), so it works
over TCP, TLS or a Unix socket alike. The two loops are the same steps:
ask the machine for its next event, send what it queued, then act on the
event (receive when it needs data).

Bytes the proxy sent after its reply are the tunnel's first bytes; they are
in the returned ``TunnelOpen.trailing_data``, not in the connection, so hand
them to the application before reading from the connection again.

A handshake has one deadline for all its steps (``handshake_timeout``); a
proxy that stalls is reported as ``proxy handshake to HOST:PORT timed out``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from . import aio, sync
from ._timeouts import Deadline
from .errors import ProxyAuthError, SocketTimeoutError, timeout_error
from .framing.http_proxy import HttpConnectClient
from .framing.tunnel import NeedData, Reconnect, TunnelClient, TunnelOpen

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "ahandshake", "handshake"]

#: 30 s for a whole proxy handshake: a SOCKS5 exchange with authentication is
#: three round trips, and the proxy's own connect to the target (often up to
#: its 10 to 20 s connect timeout) happens inside the last one.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 30.0


def _reconnect_or_fail(client: TunnelClient, can_reconnect: bool, where: str) -> HttpConnectClient:
    """The HTTP machine to restart after ``Reconnect``, or the error to raise."""
    if not can_reconnect or not isinstance(client, HttpConnectClient):
        raise ProxyAuthError(
            f"HTTP proxy {where} closed the connection after its authentication challenge "
            "(answering needs a new connection)",
            protocol="HTTP",
            reply=407,
        )
    return client


def handshake(
    conn: sync.Connection,
    client: TunnelClient,
    *,
    reconnect: Callable[[], sync.Connection] | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[sync.Connection, TunnelOpen]:
    """Run ``client``'s handshake over ``conn`` until the tunnel is open.

    Args:
        conn: a connection to the proxy.
        client: a fresh ``SocksClient`` or ``HttpConnectClient``.
        reconnect: opens a new connection to the proxy, for an HTTP proxy
            that closes after its Digest or Basic challenge. ``conn`` is
            closed first.
        handshake_timeout: seconds for the whole handshake (None: no limit).

    Returns:
        The connection that now is the tunnel (``conn``, or the one
        ``reconnect`` opened) and the ``TunnelOpen`` event.

    Raises:
        ProxyError: the proxy refused, wants other credentials, could not
            reach the target, or speaks another protocol.
        SocketTimeoutError: the handshake did not finish in time.
        BrokenError: the connection broke.

    On an error ``conn`` is left to the caller to close (it is closed
    already if ``reconnect`` was called); a connection that ``reconnect``
    opened is closed here, since the caller never saw it.
    """
    deadline = Deadline(handshake_timeout)
    where = conn.peer
    current, opened = conn, False
    try:
        while True:
            # Ask first, then send: answering the last reply queues more.
            event = client.next_event()
            data = client.data_to_send()
            if data:
                current.send_all(data, timeout=deadline.remaining())
            if isinstance(event, TunnelOpen):
                opened = True
                return current, event
            if isinstance(event, Reconnect):
                http = _reconnect_or_fail(client, reconnect is not None, where)
                assert reconnect is not None
                current.close()
                current = reconnect()
                http.reconnected()
                continue
            assert isinstance(event, NeedData)
            client.receive_data(current.receive_some(timeout=deadline.remaining()))
    except SocketTimeoutError as exc:
        raise timeout_error("proxy handshake", where, handshake_timeout) from exc
    finally:
        if not opened and current is not conn:
            current.close()


async def ahandshake(
    conn: aio.Connection,
    client: TunnelClient,
    *,
    reconnect: Callable[[], Awaitable[aio.Connection]] | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[aio.Connection, TunnelOpen]:
    """The asyncio twin of ``handshake`` (same arguments, results and errors)."""
    deadline = Deadline(handshake_timeout)
    where = conn.peer
    current, opened = conn, False
    try:
        while True:
            # Ask first, then send: answering the last reply queues more.
            event = client.next_event()
            data = client.data_to_send()
            if data:
                await current.send_all(data, timeout=deadline.remaining())
            if isinstance(event, TunnelOpen):
                opened = True
                return current, event
            if isinstance(event, Reconnect):
                http = _reconnect_or_fail(client, reconnect is not None, where)
                assert reconnect is not None
                await current.aclose()
                current = await reconnect()
                http.reconnected()
                continue
            assert isinstance(event, NeedData)
            client.receive_data(await current.receive_some(timeout=deadline.remaining()))
    except SocketTimeoutError as exc:
        raise timeout_error("proxy handshake", where, handshake_timeout) from exc
    finally:
        if not opened and current is not conn:
            await current.aclose()
