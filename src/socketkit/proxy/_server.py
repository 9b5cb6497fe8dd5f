"""The proxy as a service of the server engine: SOCKS4, 4a, 5 and HTTP on one port.

Per accepted connection, a ``ProxyProtocol`` (an engine ``ConnectionProtocol``,
so limits, idle timeout, access control, drain, workers, the summary and
JSON logs all apply) goes through two phases:

1. Handshake. The first byte names the protocol
   (``tunnel.detect_proxy_protocol``); the bytes go to that server machine
   (``SocksServer`` or ``HttpProxyServer``), which answers the greeting and
   authentication itself. A ``TunnelRequest`` is checked against the
   destination policy, by name before resolving and by address after, and
   the target is connected with the loop's non-blocking connect on sockets
   from the ``_sockets`` seam (``Connecting``), so ``--trace`` sees them.
   A failure becomes the protocol's reply code (``failure_for_errno``: a
   timeout is TTL expired / 504, refused and unreachable their own codes).
2. Tunnel. The reply is sent, then the client's connection and the
   target's are handed to one two-way copy (``_tunnel``), with the bytes the
   client sent after its request going first.

HTTP requests with an absolute ``http://`` URI are not tunnels: each is
forwarded by ``_forward.Forwarding`` and the connection reads the next
request when the answer is complete (keep-alive).

One client never harms the server: every failure of a connection ends that
connection with one logged reason; a client that speaks no proxy protocol
is one ``peer broke framing`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._sockets import ConnectAttempt
from ..address import InetEndpoint
from ..aio._connection import connect_socket
from ..errors import (
    AddressError,
    IncompleteReadError,
    SocketkitError,
    SocketTimeoutError,
    timeout_error,
)
from ..framing.http_proxy import (
    DEFAULT_MAX_BODY_SIZE,
    ClientClosed,
    ForwardRequest,
    HttpProxyServer,
    RequestBody,
    RequestEnd,
)
from ..framing.socks import SocksServer
from ..framing.tunnel import (
    NEED_DATA,
    ProxyKind,
    ProxyRequestError,
    Rejected,
    TunnelFailure,
    TunnelRequest,
    detect_proxy_protocol,
    failure_for_errno,
    format_authority,
)
from ..server import ConnectionProtocol, Service
from ._policy import DestinationPolicy

if TYPE_CHECKING:
    from ..server._engine import ConnectionHost
    from ._forward import Forwarding

__all__ = [
    "DEFAULT_PROXY_CONNECT_TIMEOUT",
    "DEFAULT_PROXY_HANDSHAKE_TIMEOUT",
    "DEFAULT_PROXY_PORT",
    "Credentials",
    "ProxyProtocol",
    "ProxySettings",
    "check_credentials",
    "proxy_service",
]

#: The SOCKS port (RFC 1928 section 3), also ncat's and curl's default.
DEFAULT_PROXY_PORT = 1080
#: 10 s to connect to a target: longer than a loopback or LAN connect ever
#: takes, shorter than a client's own handshake timeout (30 s for ours), so
#: the client hears "TTL expired" / 504 instead of timing out itself.
DEFAULT_PROXY_CONNECT_TIMEOUT = 10.0
#: 30 s for a client to finish its handshake (greeting, credentials, request).
DEFAULT_PROXY_HANDSHAKE_TIMEOUT = 30.0

Authenticate = Callable[[str, str], bool]
MachineType = SocksServer | HttpProxyServer


class Credentials:
    """One user name and password a proxy accepts.

    Calling it checks a pair in constant time (``hmac.compare_digest``, both
    always, so the time taken says nothing about which one was wrong);
    ``password_of`` serves HTTP Digest, which needs the password itself.
    """

    __slots__ = ("_password", "_user")

    def __init__(self, username: str, password: str) -> None:
        self._user = username
        self._password = password

    def __call__(self, user: str, given: str) -> bool:
        user_ok = hmac.compare_digest(user.encode(), self._user.encode())
        password_ok = hmac.compare_digest(given.encode(), self._password.encode())
        return user_ok and password_ok

    def password_of(self, user: str) -> str | None:
        """The password of ``user``, or None for a user we do not know."""
        return self._password if hmac.compare_digest(user.encode(), self._user.encode()) else None


def check_credentials(username: str, password: str) -> Credentials:
    """The check accepting exactly ``username`` and ``password`` (see ``Credentials``)."""
    return Credentials(username, password)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """How a proxy serves its clients.

    Attributes:
        authenticate: if set, clients must give credentials it accepts
            (SOCKS5 RFC 1929, HTTP Basic); SOCKS4 clients are then refused.
            A ``Credentials`` also serves HTTP Digest (RFC 7616).
        policy: which targets may be reached (``--allow-dest``/``--deny-dest``).
        connect_timeout: seconds to connect to a target.
        handshake_timeout: seconds for a client to finish its handshake.
        family: AF_UNSPEC, or AF_INET/AF_INET6 to reach targets over one only.
        forward: forward plain ``http://`` requests (else 405).
        max_body_size: the largest forwarded request body, in bytes.
    """

    authenticate: Authenticate | None = None
    policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    connect_timeout: float = DEFAULT_PROXY_CONNECT_TIMEOUT
    handshake_timeout: float = DEFAULT_PROXY_HANDSHAKE_TIMEOUT
    family: int = socket.AF_UNSPEC
    forward: bool = True
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: The key of HTTP Digest nonces, one per server so that a nonce from a
    #: 407 is recognised on the client's next connection.
    digest_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def machine(self, kind: ProxyKind) -> MachineType:
        """A fresh server machine for a client speaking ``kind``."""
        if kind is ProxyKind.HTTP:
            check = self.authenticate
            digest = check.password_of if isinstance(check, Credentials) else None
            return HttpProxyServer(
                authenticate=self.authenticate,
                digest_password=digest,
                digest_secret=self.digest_secret,
                forward=self.forward,
                max_body_size=self.max_body_size,
            )
        return SocksServer(authenticate=self.authenticate)


class TargetUnavailable(Exception):
    """The target cannot be connected: ``failure`` for the reply, ``reason`` for the log."""

    def __init__(self, failure: TunnelFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


async def connect_target(host: str, port: int, settings: ProxySettings) -> socket.socket:
    """A non-blocking socket connected to ``host:port``, each allowed address in turn.

    ``aio.connect_socket`` does the connecting (the name resolved in the
    loop's executor, sockets from the seam); every resolved address is
    checked against the policy before it is tried.

    Raises:
        TargetUnavailable: denied, unresolvable, or every connect failed.
    """
    policy = settings.policy
    refusal = policy.check(host, port)
    if refusal is not None:
        raise TargetUnavailable(TunnelFailure.NOT_ALLOWED, refusal)
    denied: list[str] = []

    def admit(attempt: ConnectAttempt) -> bool:
        reason = policy.check(host, port, str(attempt.sockaddr[0]))
        if reason is not None:
            denied.append(reason)
        return reason is None

    timeout = settings.connect_timeout
    try:
        async with asyncio.timeout(timeout):
            return await connect_socket(InetEndpoint(host, port), settings.family, admit=admit)
    except TimeoutError:
        where = format_authority(host, port)
        raise TargetUnavailable(
            TunnelFailure.TTL_EXPIRED, str(timeout_error("connect", where, timeout))
        ) from None
    except AddressError as exc:
        raise TargetUnavailable(TunnelFailure.HOST_UNREACHABLE, str(exc)) from None
    except SocketkitError as exc:
        if denied and exc.errno is None:
            raise TargetUnavailable(TunnelFailure.NOT_ALLOWED, denied[0]) from None
        if isinstance(exc, SocketTimeoutError):
            raise TargetUnavailable(TunnelFailure.TTL_EXPIRED, str(exc)) from None
        raise TargetUnavailable(failure_for_errno(exc.errno), str(exc)) from None


def _bound(sock: socket.socket) -> tuple[str, int]:
    """The local address of a connection to a target, for a SOCKS reply."""
    try:
        host, port = sock.getsockname()[:2]
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except (OSError, ValueError):
        return ("0.0.0.0", 0)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), int(port)


class ProxyProtocol(ConnectionProtocol):
    """One proxy client: handshake, then a tunnel or forwarded HTTP requests."""

    __slots__ = (
        "_forwarding",
        "_machine",
        "_opening",
        "_timer",
        "_upstream",
        "settings",
        "target",
    )

    def __init__(self, host: ConnectionHost, settings: ProxySettings) -> None:
        super().__init__(host)
        self.settings = settings
        self._machine: MachineType | None = None
        self._opening: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._upstream: _Upstream | None = None
        self._forwarding: Forwarding | None = None
        #: ``host:port`` of the target, once asked for (for the log).
        self.target = ""

    # -- engine callbacks --------------------------------------------------

    def started(self) -> None:
        self._arm_timer()

    def _arm_timer(self) -> None:
        """A client has ``handshake_timeout`` for its handshake (or its next request)."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.settings.handshake_timeout, self._handshake_expired)

    def received(self, data: bytes) -> None:
        if self._upstream is not None:
            self._upstream.send(data)
            return
        machine = self._machine
        if machine is None:
            kind = detect_proxy_protocol(data)  # FramingError: logged by the base class
            if kind is None:
                return
            machine = self._machine = self.settings.machine(kind)
        machine.receive_data(data)
        self.drive()

    def ended(self) -> bool | None:
        if self._upstream is not None:
            return self._upstream.client_ended()
        if self._machine is not None and self._opening is None:
            self._machine.receive_data(b"")
            self.drive()
        # A forwarded answer still on its way needs the write side.
        return True if self._forwarding is not None else None

    def writable(self) -> None:
        if self._upstream is not None:
            self._upstream.resume()
        if self._forwarding is not None:
            self._forwarding.resume()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._upstream is not None:
            self._upstream.pause()
        if self._forwarding is not None:
            self._forwarding.pause()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._opening is not None:
            self._opening.cancel()
        if self._upstream is not None:
            self._upstream.close()
        if self._forwarding is not None:
            self._forwarding.close()
        super().connection_lost(exc)

    def shutdown_requested(self) -> None:
        """A tunnel has no message boundary: it lasts until its ends finish it
        (or the drain timeout); a connection still in its handshake closes."""
        if self._upstream is None and self._forwarding is None and self._opening is None:
            self.close()

    # -- the handshake -----------------------------------------------------

    def _handshake_expired(self) -> None:
        self._timer = None
        self.abort(f"no complete proxy request within {self.settings.handshake_timeout:g} s")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        """Send what the machine has queued for the client."""
        if self._machine is not None:
            data = self._machine.data_to_send()
            if data:
                self.write(data)

    def drive(self) -> None:
        """Act on the machine's events until it needs more bytes or a decision."""
        machine = self._machine
        assert machine is not None
        while self.transport is not None and self._opening is None:
            if self._forwarding is not None and not self._forwarding.reading_request:
                return  # the answer to the last request is still on its way
            try:
                event = machine.next_event()
            except ProxyRequestError as exc:
                self.flush()
                self.close(f"peer broke framing: {exc}")
                self.host.stats.errors += 1
                return
            except IncompleteReadError as exc:
                self.close(str(exc))
                return
            self.flush()
            if event is NEED_DATA:
                return
            if isinstance(event, Rejected):
                self.host.stats.refused += 1
                self.close(f"refused: {event.reason}")
                return
            if isinstance(event, ClientClosed):
                self.close()
                return
            if isinstance(event, TunnelRequest):
                self._start_opening(self._open_tunnel(event))
                return
            if isinstance(event, ForwardRequest):
                self._start_forward(event)
                continue
            forwarding = self._forwarding
            assert forwarding is not None
            if isinstance(event, RequestBody):
                forwarding.body(event.data)
            elif isinstance(event, RequestEnd):
                forwarding.end_request()

    def _start_opening(self, coro: Any) -> None:
        self._cancel_timer()
        assert self.transport is not None
        self.transport.pause_reading()
        self._opening = asyncio.get_running_loop().create_task(coro)

    def _log_request(self, kind: ProxyKind, username: str | None, what: str) -> None:
        user = f" as {username!r}" if username else ""
        self.host.log.event(
            f"{self.peer}: {kind.value} {what} {self.target}{user}",
            "proxy",
            True,
            peer=self.peer,
            target=self.target,
            protocol=kind.value,
        )

    def _refuse(self, failure: TunnelFailure, reason: str) -> None:
        """Answer the request with ``failure``, log ``reason`` once, close."""
        machine = self._machine
        assert machine is not None
        machine.refuse(failure)
        self.flush()
        if failure is TunnelFailure.NOT_ALLOWED:
            self.host.stats.refused += 1
        self.close(f"{self.target}: {reason}")

    async def _open_tunnel(self, request: TunnelRequest) -> None:
        machine = self._machine
        assert machine is not None
        self.target = format_authority(request.host, request.port)
        self._log_request(request.kind, request.username, "CONNECT")
        try:
            sock = await connect_target(request.host, request.port, self.settings)
        except TargetUnavailable as exc:
            self._opening = None
            self._refuse(exc.failure, exc.reason)
            return
        except SocketkitError as exc:  # socket(2) failed: out of descriptors
            self._opening = None
            self._refuse(TunnelFailure.GENERAL, str(exc))
            return
        self._opening = None
        if self.transport is None:  # the client left while we connected
            sock.close()
            return
        machine.accept(_bound(sock))
        self.flush()
        trailing = machine.trailing_data
        try:
            await self._tunnel(sock, trailing)
        except OSError as exc:
            sock.close()
            self.abort(f"{self.target}: {exc}", error=True)

    async def _tunnel(self, sock: socket.socket, first: bytes) -> None:
        """Join the client and the target's ``sock``: ``first`` goes to the target first."""
        loop = asyncio.get_running_loop()
        upstream = _Upstream(self)
        self._upstream = upstream
        await loop.create_connection(lambda: upstream, sock=sock)
        if first:
            upstream.send(first)
        if self.transport is not None:
            self.transport.resume_reading()

    # -- forwarding --------------------------------------------------------

    def _start_forward(self, request: ForwardRequest) -> None:
        from ._forward import Forwarding

        self._cancel_timer()
        self.target = format_authority(request.host, request.port)
        self._log_request(ProxyKind.HTTP, request.username, request.method)
        assert self.transport is not None
        self._forwarding = Forwarding(self, request)

    def forward_done(self, keep_alive: bool) -> None:
        """The forwarded answer is complete: read the next request, or close."""
        self._forwarding = None
        if not keep_alive:
            self.close()
            return
        if self.transport is not None:
            self._arm_timer()
            self.transport.resume_reading()
            self.drive()

    def forward_failed(self, failure: TunnelFailure | None, reason: str) -> None:
        """The target could not be reached (answer ``failure``) or broke mid-answer."""
        self._forwarding = None
        if failure is not None:
            self._refuse(failure, reason)
        else:
            self.abort(f"{self.target}: {reason}", error=True)


class _Upstream(asyncio.Protocol):
    """The target's side of a tunnel (minimal two-way copy, with backpressure)."""

    def __init__(self, client: ProxyProtocol) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.client_eof = False
        self.target_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def eof_received(self) -> bool:
        self.target_eof = True
        transport = self.client.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        if self.client_eof:
            self.client.close()
            return False
        return True

    def client_ended(self) -> bool:
        """The client half-closed: pass it on; True while the target still sends."""
        self.client_eof = True
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        if self.target_eof:
            self.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if exc is not None:
            self.client.abort(f"{self.client.target}: {exc}", error=True)
        else:
            self.client.close()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.resume_reading()

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.close()


def proxy_service(settings: ProxySettings | None = None) -> Service:
    """The engine service of a SOCKS4/4a/5 and HTTP proxy with ``settings``."""
    chosen = settings or ProxySettings()
    return Service("proxy", protocol_factory=lambda host: ProxyProtocol(host, chosen))
