"""Proxy client handshakes over any connection or a bare socket: the layer under ``sync``/``aio``.

The handshakes are sans-I/O machines (``framing.socks``, ``framing.http_proxy``).
``HandshakeSteps`` holds what a fill loop decides (send, receive,
reconnect, done; errors reworded to name the proxy), so the blocking loop
(``handshake``) and the asyncio one (``ahandshake``) differ only in their
I/O calls. Each drives any stream with ``send_all``/``receive_some``: a
``sync.Connection`` or ``aio.Connection``, or a bare socket
(``_BlockingSocketStream``, ``_SocketStream``).

``open_proxy_socket``/``aopen_proxy_socket`` connect to a proxy and run
the handshake on the bare socket, for callers that make the socket their
own: ``sync.connect(proxy=)``, ``aio.connect(proxy=)`` and the relay's
proxy sides. They return the target's first bytes (those that came with the
proxy's reply) beside the socket; a caller must hand them on first.

A handshake has one deadline for all its steps (``handshake_timeout``); a
proxy that stalls is reported as ``proxy handshake to HOST:PORT timed out``.
``socketkit.proxy_client`` is the public face of this module.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from ._sockets import aconnect_socket, connect_socket
from ._stream import RECEIVE_SIZE
from ._timeouts import DEFAULT_CONNECT_TIMEOUT, Deadline
from .address import Endpoint, InetEndpoint, as_endpoint, resolve
from .errors import (
    HostNotFoundError,
    ProxyAuthError,
    ProxyError,
    ProxyProtocolError,
    SettingError,
    SocketTimeoutError,
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
    "SyncStream",
    "ahandshake",
    "aopen_proxy_socket",
    "aresolve_target",
    "handshake",
    "open_proxy_socket",
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


class SyncStream(Protocol):
    """What ``handshake`` needs of a connection (``sync.Connection`` has it)."""

    peer: str

    def send_all(self, data: bytes, *, timeout: float | None) -> None: ...
    def receive_some(self, *, timeout: float | None) -> bytes: ...
    def close(self) -> None: ...


class AsyncStream(Protocol):
    """What ``ahandshake`` needs of a connection (``aio.Connection`` has it)."""

    peer: str

    async def send_all(self, data: bytes, *, timeout: float | None) -> None: ...
    async def receive_some(self, *, timeout: float | None) -> bytes: ...
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=SyncStream)
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
    conn: C,
    client: TunnelClient,
    *,
    reconnect: Callable[[], C] | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
) -> tuple[C, TunnelOpen]:
    """Run ``client``'s handshake over ``conn`` until the tunnel is open.

    Args:
        conn: a connection to the proxy: a ``sync.Connection``, or anything
            with its ``send_all``, ``receive_some`` and ``close``.
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
        SettingError: a target or credentials this protocol cannot carry.
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


async def aresolve_target(kind: ProxyKind, host: str, port: int, dns: DnsPolicy) -> str:
    """``resolve_target`` in the loop's executor (at once when nothing is resolved here)."""
    if not plan_target(host, dns).resolve_locally:
        return host
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(resolve_target, kind, host, port, dns)
    )


def _target(endpoint: Endpoint) -> InetEndpoint:
    if not isinstance(endpoint, InetEndpoint) or endpoint.host is None:
        raise SettingError(f"a proxy connects to a host and port, not to {endpoint}")
    return endpoint


class _BlockingSocketStream:
    """A connected blocking socket as ``handshake`` drives it (a timeout per call)."""

    __slots__ = ("peer", "sock")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer

    def send_all(self, data: bytes, *, timeout: float | None) -> None:
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise timeout_error("send", self.peer, timeout) from exc
        except OSError as exc:
            raise translate_os_error(exc, phase="send", where=self.peer) from exc

    def receive_some(self, *, timeout: float | None) -> bytes:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(RECEIVE_SIZE)
        except TimeoutError as exc:
            raise timeout_error("receive", self.peer, timeout) from exc
        except OSError as exc:
            raise translate_os_error(exc, phase="receive", where=self.peer) from exc

    def close(self) -> None:
        self.sock.close()


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


def _first_bytes(first: bytes, before_tls: bool, where: str) -> bytes:
    """The target's first bytes, which must not come before a TLS handshake."""
    if first and before_tls:
        raise ProxyProtocolError(
            f"the target spoke before the TLS handshake through the proxy {where}",
            protocol="TLS",
            proxy=where,
        )
    return first


def open_proxy_socket(
    proxy: Proxy,
    target: Endpoint,
    *,
    family: int = socket.AF_UNSPEC,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    before_tls: bool = False,
) -> tuple[socket.socket, bytes]:
    """A blocking socket that is a tunnel to ``target``, and the target's first bytes.

    Args:
        proxy: the proxy, its protocol and credentials.
        target: where the proxy connects (host and port).
        family: the address family for reaching the proxy.
        connect_timeout: seconds to connect to the proxy.
        before_tls: a TLS handshake follows, so the target must not have
            spoken yet (its bytes would be lost under the TLS layer).

    Raises:
        ProxyError: the proxy refused, wants other credentials, could not
            reach the target, or speaks another protocol (naming the proxy).
        ConnectError, SocketTimeoutError, AddressError: reaching the proxy
            failed; HostNotFoundError also for a target resolved here.
        SettingError: a target or credentials the protocol cannot carry.
    """
    where = _target(target)
    assert where.host is not None
    host = resolve_target(proxy.kind, where.host, where.port, proxy.dns)
    client = _client(proxy, host, where.port)
    endpoint = as_endpoint(proxy.address, default_host="127.0.0.1")

    def reconnect() -> _BlockingSocketStream:
        sock = connect_socket(endpoint, family=family, timeout=connect_timeout)
        return _BlockingSocketStream(sock, str(endpoint))

    stream = reconnect()
    try:
        tunnel, opened = handshake(
            stream, client, reconnect=reconnect, handshake_timeout=proxy.handshake_timeout
        )
    except BaseException:
        stream.close()
        raise
    try:
        first = _first_bytes(opened.trailing_data, before_tls, str(endpoint))
    except BaseException:
        tunnel.close()
        raise
    tunnel.sock.settimeout(None)
    return tunnel.sock, first


async def aopen_proxy_socket(
    proxy: Proxy,
    target: Endpoint,
    *,
    family: int = socket.AF_UNSPEC,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    before_tls: bool = False,
) -> tuple[socket.socket, bytes]:
    """The asyncio twin of ``open_proxy_socket``: a non-blocking socket (the
    target's name, if resolved here, is resolved in the loop's executor)."""
    where = _target(target)
    assert where.host is not None
    host = await aresolve_target(proxy.kind, where.host, where.port, proxy.dns)
    client = _client(proxy, host, where.port)
    endpoint = as_endpoint(proxy.address, default_host="127.0.0.1")

    async def reconnect() -> _SocketStream:
        try:
            async with asyncio.timeout(connect_timeout):
                sock = await aconnect_socket(endpoint, family)
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
    try:
        first = _first_bytes(opened.trailing_data, before_tls, str(endpoint))
    except BaseException:
        await tunnel.aclose()
        raise
    return tunnel.sock, first


def _client(proxy: Proxy, host: str, port: int) -> SocksClient | HttpConnectClient:
    return tunnel_client(proxy.kind, host, port, username=proxy.username, password=proxy.password)
