"""Connect through a SOCKS or HTTP proxy, blocking or asyncio.

``connect_via_proxy`` (and its twin ``aconnect_via_proxy``) does all of it:
decide where the target's name is resolved (``tunnel.plan_target``), open
the connection to the proxy, and run the handshake; ``handshake`` and
``ahandshake`` run only the handshake, over a connection the caller opened.

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

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypedDict, TypeVar

from . import aio, sync
from ._stream import RECEIVE_SIZE
from ._timeouts import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, Deadline
from .address import Endpoint, InetEndpoint, as_endpoint, resolve
from .errors import (
    HostNotFoundError,
    ProxyAuthError,
    ProxyError,
    ProxyProtocolError,
    SocketTimeoutError,
    UsageError,
    timeout_error,
    translate_os_error,
)
from .framing.http_proxy import HttpConnectClient
from .framing.socks import SocksClient
from .framing.tunnel import (
    DnsPolicy,
    NeedData,
    ProxyKind,
    Reconnect,
    TunnelClient,
    TunnelOpen,
    plan_target,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "AsyncStream",
    "HandshakeSteps",
    "Proxy",
    "aconnect_via_proxy",
    "ahandshake",
    "aopen_proxy_socket",
    "aopen_tunnel",
    "connect_via_proxy",
    "handshake",
    "open_tunnel",
    "resolve_target",
    "tunnel_client",
]

#: 30 s for a whole proxy handshake: a SOCKS5 exchange with authentication is
#: three round trips, and the proxy's own connect to the target (often up to
#: its 10 to 20 s connect timeout) happens inside the last one.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy to connect through: the ``proxy=`` option of ``sync.connect``/``aio.connect``.

    Attributes:
        address: the proxy's endpoint (``host:port``, ``[v6]:port``, ``unix:/p``).
        kind: its protocol (SOCKS4 sends SOCKS4a for a name).
        username, password: credentials (SOCKS5 RFC 1929, HTTP Basic or
            Digest; SOCKS4: a user id only).
        dns: where the target's name is resolved (``tunnel.DnsPolicy``).
        handshake_timeout: seconds for the whole handshake.
    """

    address: Endpoint | str
    kind: ProxyKind = ProxyKind.SOCKS5
    username: str | None = None
    password: str | None = None
    dns: DnsPolicy = "remote"
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT

    @property
    def options(self) -> _ProxyOptions:
        """The keyword arguments of ``connect_via_proxy`` that this proxy sets."""
        return {
            "username": self.username,
            "password": self.password,
            "dns": self.dns,
            "handshake_timeout": self.handshake_timeout,
        }


class _ProxyOptions(TypedDict):
    username: str | None
    password: str | None
    dns: DnsPolicy
    handshake_timeout: float | None


class AsyncStream(Protocol):
    """What ``ahandshake`` needs of a connection (``aio.Connection`` has it)."""

    peer: str

    async def send_all(self, data: bytes, *, timeout: float | None) -> None: ...
    async def receive_some(self, *, timeout: float | None) -> bytes: ...
    async def aclose(self) -> None: ...


S = TypeVar("S", bound=AsyncStream)


#: What ``HandshakeSteps.next`` asks of the fill loop after sending its bytes.
RECEIVE: Final = "receive"
RECONNECT: Final = "reconnect"


def _at_proxy(exc: ProxyError, where: str) -> ProxyError:
    """``exc`` reworded to name the proxy's address (the machines do not know it)."""
    message = exc.message
    for said in ("SOCKS4 proxy", "SOCKS5 proxy", "HTTP proxy", "the proxy"):
        if said in message:
            message = message.replace(said, f"{said} {where}", 1)
            break
    else:
        message = f"proxy {where}: {message}"
    return type(exc)(message, protocol=exc.protocol, reply=exc.reply, proxy=where)


class HandshakeSteps:
    """The decisions of a handshake's fill loop, without I/O, for both layers.

    Each turn: ``next()`` gives the bytes to send now and what to do after
    sending them: receive (then ``receive(data)``), reconnect (then
    ``reconnected()``), or the ``TunnelOpen`` that ends the handshake.
    Errors name the proxy (``where``).
    """

    __slots__ = ("_can_reconnect", "_client", "where")

    def __init__(self, client: TunnelClient, where: str, *, can_reconnect: bool) -> None:
        self._client = client
        self._can_reconnect = can_reconnect
        #: The proxy's address, for messages.
        self.where = where

    def next(self) -> tuple[bytes, str | TunnelOpen]:
        """(bytes to send, then ``RECEIVE``, ``RECONNECT`` or the ``TunnelOpen``).

        Raises:
            ProxyError: the proxy did not open the tunnel (naming its address).
        """
        client = self._client
        try:
            # Ask first, then send: answering the last reply queues more.
            event = client.next_event()
        except ProxyError as exc:
            raise _at_proxy(exc, self.where) from None
        data = client.data_to_send()
        if isinstance(event, TunnelOpen):
            return data, event
        if isinstance(event, Reconnect):
            if not self._can_reconnect or not isinstance(client, HttpConnectClient):
                raise ProxyAuthError(
                    f"HTTP proxy {self.where} closed the connection after its authentication "
                    "challenge (answering needs a new connection)",
                    protocol="HTTP",
                    reply=407,
                )
            return data, RECONNECT
        assert isinstance(event, NeedData)
        return data, RECEIVE

    def receive(self, data: bytes) -> None:
        """Feed what one receive returned (``b""``: the proxy closed)."""
        self._client.receive_data(data)

    def reconnected(self) -> None:
        """The new connection after ``RECONNECT`` is up."""
        client = self._client
        assert isinstance(client, HttpConnectClient)
        client.reconnected()


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
    steps = HandshakeSteps(client, conn.peer, can_reconnect=reconnect is not None)
    current, opened = conn, False
    try:
        while True:
            data, then = steps.next()
            if data:
                current.send_all(data, timeout=deadline.remaining())
            if isinstance(then, TunnelOpen):
                opened = True
                return current, then
            if then is RECONNECT:
                assert reconnect is not None
                current.close()
                current = reconnect()
                steps.reconnected()
            else:
                steps.receive(current.receive_some(timeout=deadline.remaining()))
    except SocketTimeoutError as exc:
        raise timeout_error("proxy handshake", steps.where, handshake_timeout) from exc
    finally:
        if not opened and current is not conn:
            current.close()


async def ahandshake(
    conn: S,
    client: TunnelClient,
    *,
    reconnect: Callable[[], Awaitable[S]] | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[S, TunnelOpen]:
    """The asyncio twin of ``handshake`` (same arguments, results and errors;
    the same ``HandshakeSteps``, only the I/O calls differ)."""
    deadline = Deadline(handshake_timeout)
    steps = HandshakeSteps(client, conn.peer, can_reconnect=reconnect is not None)
    current, opened = conn, False
    try:
        while True:
            data, then = steps.next()
            if data:
                await current.send_all(data, timeout=deadline.remaining())
            if isinstance(then, TunnelOpen):
                opened = True
                return current, then
            if then is RECONNECT:
                assert reconnect is not None
                await current.aclose()
                current = await reconnect()
                steps.reconnected()
            else:
                steps.receive(await current.receive_some(timeout=deadline.remaining()))
    except SocketTimeoutError as exc:
        raise timeout_error("proxy handshake", steps.where, handshake_timeout) from exc
    finally:
        if not opened and current is not conn:
            await current.aclose()


def tunnel_client(
    kind: ProxyKind,
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
) -> SocksClient | HttpConnectClient:
    """A fresh client machine for a proxy of ``kind`` (SOCKS4 sends 4a for a name).

    Raises:
        UsageError: a target or credentials this protocol cannot carry.
    """
    if kind is ProxyKind.HTTP:
        return HttpConnectClient(host, port, username=username, password=password)
    return SocksClient(
        4 if kind is ProxyKind.SOCKS4 else 5, host, port, username=username, password=password
    )


def resolve_target(kind: ProxyKind, host: str, port: int, dns: DnsPolicy) -> str:
    """The host to send to the proxy: ``host``, or its address when ``dns`` says so.

    Blocking (getaddrinfo). SOCKS4 takes an IPv4 address only, so it
    resolves to one.

    Raises:
        HostNotFoundError: local resolution failed and ``dns`` has no fallback.
        AddressError: ``dns`` is ``none`` and ``host`` is a name.
    """
    plan = plan_target(host, dns)
    if not plan.resolve_locally:
        return host
    family = socket.AF_INET if kind is ProxyKind.SOCKS4 else socket.AF_UNSPEC
    try:
        return resolve(InetEndpoint(host, port), family=family)[0].sockaddr[0]
    except HostNotFoundError:
        if plan.send_name_if_unresolved:
            return host
        raise


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


async def _aclient(
    kind: ProxyKind,
    host: str,
    port: int,
    dns: DnsPolicy,
    username: str | None,
    password: str | None,
) -> SocksClient | HttpConnectClient:
    """``tunnel_client`` for the target as ``dns`` says, resolved in the loop's executor."""
    target = host
    if plan_target(host, dns).resolve_locally:
        target = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(resolve_target, kind, host, port, dns)
        )
    return tunnel_client(kind, target, port, username=username, password=password)


class _SocketStream:
    """A connected non-blocking socket as ``ahandshake`` drives it (the loop's sock_* calls).

    For callers that keep the socket afterwards (the relay makes it a
    transport of its own), where an ``aio.Connection`` would own it.
    """

    __slots__ = ("peer", "sock")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer

    async def send_all(self, data: bytes, *, timeout: float | None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except TimeoutError as exc:
            raise timeout_error("send", self.peer, timeout) from exc
        except OSError as exc:
            raise translate_os_error(exc, phase="send", where=self.peer) from exc

    async def receive_some(self, *, timeout: float | None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.get_running_loop().sock_recv(self.sock, RECEIVE_SIZE)
        except TimeoutError as exc:
            raise timeout_error("receive", self.peer, timeout) from exc
        except OSError as exc:
            raise translate_os_error(exc, phase="receive", where=self.peer) from exc

    async def aclose(self) -> None:
        self.sock.close()


async def aopen_proxy_socket(
    proxy: Proxy,
    target: Endpoint,
    *,
    family: int = socket.AF_UNSPEC,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
) -> tuple[socket.socket, bytes]:
    """A non-blocking socket that is a tunnel to ``target``, and the target's first bytes.

    For a caller that makes the socket a transport itself (the relay's
    ``socks5:``/``http-connect:`` sides); ``aio.connect(proxy=)`` gives a
    connection instead.

    Raises:
        As ``connect_via_proxy``.
    """
    where = _target(target)
    assert where.host is not None
    client = await _aclient(
        proxy.kind, where.host, where.port, proxy.dns, proxy.username, proxy.password
    )
    endpoint = as_endpoint(proxy.address, default_host="127.0.0.1")

    async def reconnect() -> _SocketStream:
        try:
            async with asyncio.timeout(connect_timeout):
                sock = await aio.connect_socket(endpoint, family)
        except TimeoutError as exc:
            raise timeout_error("connect", str(endpoint), connect_timeout) from exc
        return _SocketStream(sock, str(endpoint))

    stream = await reconnect()
    try:
        tunnel, opened = await ahandshake(
            stream, client, reconnect=reconnect, handshake_timeout=proxy.handshake_timeout
        )
    except BaseException:
        await stream.aclose()
        raise
    return tunnel.sock, opened.trailing_data


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
    client = await _aclient(kind, host, port, dns, username, password)

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


def _target(endpoint: Endpoint) -> InetEndpoint:
    if not isinstance(endpoint, InetEndpoint) or endpoint.host is None:
        raise UsageError(f"a proxy connects to a host and port, not to {endpoint}")
    return endpoint


def _through(proxy: Proxy, target: Endpoint) -> tuple[Endpoint | str, ProxyKind, str, int]:
    """``connect_via_proxy``'s first arguments for ``target`` through ``proxy``."""
    where = _target(target)
    assert where.host is not None
    return proxy.address, proxy.kind, where.host, where.port


def _first_bytes(conn: sync.Connection | aio.Connection, opened: TunnelOpen, tls: bool) -> None:
    """Put the target's first bytes in ``conn``'s buffer (none allowed before TLS)."""
    if not opened.trailing_data:
        return
    if tls:
        raise ProxyProtocolError(
            f"the target spoke before the TLS handshake through the proxy {conn.peer}",
            protocol="TLS",
            proxy=conn.peer,
        )
    conn._core.feed(opened.trailing_data)


def open_tunnel(
    proxy: Proxy,
    target: Endpoint,
    *,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
    before_tls: bool = False,
) -> sync.Connection:
    """A connection to ``target`` through ``proxy`` (``sync.connect(..., proxy=)``).

    The target's first bytes, if they came with the proxy's reply, are
    already in the connection's buffer: the next receive returns them.

    Args:
        before_tls: a TLS handshake follows, so the target must not have
            spoken yet (its bytes would be lost under the TLS layer).

    Raises:
        As ``connect_via_proxy``; UsageError for a target that is not host:port.
    """
    conn, opened = connect_via_proxy(
        *_through(proxy, target), connect_timeout=connect_timeout, timeout=timeout, **proxy.options
    )
    try:
        _first_bytes(conn, opened, before_tls)
    except BaseException:
        conn.close()
        raise
    return conn


async def aopen_tunnel(
    proxy: Proxy,
    target: Endpoint,
    *,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
    before_tls: bool = False,
) -> aio.Connection:
    """The asyncio twin of ``open_tunnel`` (``aio.connect(..., proxy=)``)."""
    conn, opened = await aconnect_via_proxy(
        *_through(proxy, target), connect_timeout=connect_timeout, timeout=timeout, **proxy.options
    )
    try:
        _first_bytes(conn, opened, before_tls)
    except BaseException:
        await conn.aclose()
        raise
    return conn
