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
   from the ``_sockets`` seam (``aconnect_socket``), so ``--trace`` sees them.
   A failure becomes the protocol's reply code (``failure_for_errno``: a
   timeout is TTL expired / 504, refused and unreachable their own codes).
2. Tunnel. The reply is sent, then the client's connection and the
   target's become the two sides of the relay's ``Link`` (the one copy loop
   of every relay: flow control, half-close, idle time), with the bytes the
   client sent after its request going first. ``ProxyProtocol`` is a
   ``RelayProtocol`` whose sink reads the handshake until then, so the
   tunnel's read path is exactly the relay's.

HTTP requests with an absolute ``http://`` URI are not tunnels: each is
forwarded by ``_forward.Forwarding`` and the connection reads the next
request when the answer is complete (keep-alive).

One client never harms the server: every failure of a connection ends that
connection with one logged reason; a client that speaks no proxy protocol
is one ``peer broke framing`` line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from ..errors import (
    FramingError,
    IncompleteReadError,
    SocketkitError,
)
from ..framing.http_proxy import (
    ClientClosed,
    ForwardRequest,
    RequestBody,
    RequestEnd,
)
from ..framing.tunnel import (
    NEED_DATA,
    ProxyKind,
    ProxyRequestError,
    Rejected,
    TunnelFailure,
    TunnelRequest,
    detect_proxy_protocol,
    format_authority,
)
from ..relay._link import Link, LinkOptions, PendingSink, SideProtocol
from ..relay._service import RelayProtocol
from ..server._services import ProtocolFactory
from ._forward import Forwarding
from ._settings import MachineType, ProxySettings, TargetUnavailable, connect_target

if TYPE_CHECKING:
    from ..server._engine import ConnectionHost

__all__ = [
    "ProxyProtocol",
    "proxy_factory",
]


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


class _Handshake:
    """Where a client's bytes go until its tunnel opens: to the proxy machine.

    It stands in the place of the link's sink (``RelayProtocol.sink``), so
    the relay's read path is the same in both phases and costs nothing more
    once the tunnel is open.
    """

    __slots__ = ("protocol",)

    def __init__(self, protocol: ProxyProtocol) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.protocol.handshake_received(bytes(data))


async def _no_opener(_link: Link, _index: int, _counter: Any) -> None:  # pragma: no cover
    raise AssertionError("a proxy opens its other side from the client's request")


class ProxyProtocol(RelayProtocol):
    """One proxy client: handshake, then a tunnel (the relay's link) or forwarded requests."""

    __slots__ = (
        "_connecting",
        "_forwarding",
        "_machine",
        "_timer",
        "_tunnel",
        "settings",
        "target",
    )

    def __init__(self, host: ConnectionHost, settings: ProxySettings) -> None:
        super().__init__(host, _no_opener, LinkOptions(), "?")
        self.settings = settings
        self.sink = _Handshake(self)
        self._machine: MachineType | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._forwarding: Forwarding | None = None
        #: True once the client and the target are the two sides of the link.
        self._tunnel = False
        #: ``host:port`` of the target, once asked for (for the log).
        self.target = ""

    # -- engine callbacks --------------------------------------------------

    def started(self) -> None:
        # Not RelayProtocol's: the other side is known only from the request.
        self.link.sides[0].name = self.peer
        self._arm_timer()

    def _arm_timer(self) -> None:
        """A client has ``handshake_timeout`` for its handshake (or its next request)."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.settings.handshake_timeout, self._handshake_expired)

    def handshake_received(self, data: bytes) -> None:
        """Bytes from a client that has no tunnel yet: the machine's to read."""
        try:
            machine = self._machine
            if machine is None:
                kind = detect_proxy_protocol(data)
                if kind is None:
                    return
                machine = self._machine = self.settings.machine(kind)
            machine.receive_data(data)
            self.drive()
        except FramingError as exc:
            self.abort(f"peer broke framing: {exc}", error=True)
        except SocketkitError as exc:
            self.abort(str(exc), error=True)

    def ended(self) -> bool:
        if self._tunnel:
            return super().ended()
        if self._machine is not None and self._connecting is None:
            self._machine.receive_data(b"")
            self.drive()
        # A forwarded answer still on its way needs the write side.
        return self._forwarding is not None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._forwarding is not None:
            self._forwarding.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._forwarding is not None:
            self._forwarding.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._connecting is not None:
            self._connecting.cancel()
        if self._forwarding is not None:
            self._forwarding.close()
        super().connection_lost(exc)

    def shutdown_requested(self) -> None:
        """A tunnel has no message boundary: it lasts until its ends finish it
        (or the drain timeout); a connection still in its handshake closes."""
        if not self._tunnel and self._forwarding is None and self._connecting is None:
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
        while self.transport is not None and self._connecting is None and not self._tunnel:
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
                self._cancel_timer()
                assert self.transport is not None
                self.transport.pause_reading()
                task = asyncio.get_running_loop().create_task(self._open_tunnel(event))
                self._connecting = task
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
            self._connecting = None
            self._refuse(exc.failure, exc.reason)
            return
        if self.transport is None:  # the client left while we connected
            sock.close()
            return
        try:
            await self._join(sock)
        except OSError as exc:
            sock.close()
            self.abort(f"{self.target}: {exc}", error=True)
        except BaseException:
            if self.link.sides[1].source is None:  # no transport owns it yet
                sock.close()
            raise
        finally:
            self._connecting = None

    async def _join(self, sock: socket.socket) -> None:
        """Reply, then make the client and the target's ``sock`` the two sides of
        the relay's link; the bytes the client sent after its request go first."""
        machine = self._machine
        assert machine is not None
        link = self.link
        link.sides[1].name = self.target
        target = SideProtocol(link, 1, counter=self)
        transport, _ = await asyncio.get_running_loop().create_connection(lambda: target, sock=sock)
        link.attach(1, transport, transport, target)
        if self.transport is None or link.finished:
            transport.close()
            return
        machine.accept(_bound(sock))
        self.flush()
        pending = PendingSink()
        first = machine.trailing_data
        if first:
            pending.write(first)
        self.sink = pending
        self._tunnel = True
        link.attach(0, self.transport, self.transport, self)

    # -- forwarding --------------------------------------------------------

    def _start_forward(self, request: ForwardRequest) -> None:

        self._cancel_timer()
        self.target = format_authority(request.host, request.port)
        self._log_request(ProxyKind.HTTP, request.username, request.method)
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


def proxy_factory(settings: ProxySettings | None = None) -> ProtocolFactory:
    """The engine's protocol factory for a SOCKS4/4a/5 and HTTP proxy with ``settings``
    (``ServerConfig(service="proxy", protocol_factory=...)``)."""
    chosen = settings or ProxySettings()
    return lambda host: ProxyProtocol(host, chosen)
