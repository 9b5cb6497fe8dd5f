"""The relay as a service of the server engine: one accepted connection, one link.

A listening relay (``relay tcp-listen:P,fork tcp:H:Q``, ``listen -e``,
``listen`` to standard output) is a ``StreamEngine`` whose connections are
``RelayProtocol``s, so it gets everything the engine gives servers: its own
accept loop with back-off when out of descriptors, ``--max-conns``,
``--idle-timeout`` (write stalls count as idle), drain on SIGTERM,
``--allow``/``--deny``, the PROXY protocol, ``--workers``, the summary
line and JSON logs.

Per connection: the accepted socket is side a of a ``Link``; the protocol
pauses reading it, opens side b (``open_other``: a connection, a program,
standard I/O) in a task without blocking the loop, and the link starts
once both are there. Bytes then move in ``data_received``, straight into
the other transport. A side b that cannot be opened ends the connection
with one logged reason; the listener keeps serving.

Bookkeeping: the engine's counters see the client's bytes (``bytes_in``
from the client, ``bytes_out`` to it), and the connection counts against
``--max-conns`` until both sides are closed (for exec: until the program
exits).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import SocketkitError
from ..server import ConnectionHost, ConnectionProtocol, ProtocolFactory
from ._link import Link, LinkOptions, PendingSink
from ._tls import TLSLayer, handshake_done

__all__ = ["Opener", "RelayProtocol", "relay_factory"]

#: Opens side ``index`` of a link: (link, index, counter) -> attached.
Opener = Callable[[Link, int, Any], Awaitable[None]]


class RelayProtocol(ConnectionProtocol):
    """An accepted connection relayed to whatever ``open_other`` opens."""

    __slots__ = ("_lost", "_open_other", "_opening", "_tls", "link", "sink")

    def __init__(
        self,
        host: ConnectionHost,
        open_other: Opener,
        options: LinkOptions,
        target: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host)
        self._open_other = open_other
        #: Serve TLS with this context (a ``TLSLayer`` between the socket and us).
        self._tls: Any = tls
        self._opening: asyncio.Task[None] | None = None
        #: connection_lost's argument, kept while the link still flushes.
        self._lost: tuple[Exception | None] | None = None
        self.link = Link(options, names=("?", target), owner=self)
        #: Where the client's bytes go (the other side's transport, once open).
        self.sink: Any = PendingSink()

    @property
    def count(self) -> int:
        """Bytes from the client (the link's count for side a)."""
        return self.bytes_in

    def started(self) -> None:
        assert self.transport is not None
        self.link.sides[0].name = self.peer
        if self._tls is not None:
            raw = self.transport
            layer = TLSLayer(self._tls, self, server_side=True)
            raw.set_protocol(layer)
            layer.connection_made(raw)
            self._tls = layer
            self.transport = layer  # type: ignore[assignment]
        else:
            self.link.attach(0, self.transport, self.transport, self)
            # uvloop starts reading once connection_made has returned, whatever
            # the protocol asked in it: pause again before the first read.
            asyncio.get_running_loop().call_soon(self._hold)
        self._opening = asyncio.get_running_loop().create_task(self._open())

    def _hold(self) -> None:
        if self.transport is not None and not self.link.running:
            self.transport.pause_reading()

    async def _open(self) -> None:
        try:
            if self._tls is not None:
                layer = self._tls
                await handshake_done(layer, role="server", where=self.peer, timeout=None)
                self.host.log.event(f"TLS with {self.peer}: {layer.describe()}", "tls", True)
                self.link.attach(0, layer, layer, self)
                layer.start_app()
            await self._open_other(self.link, 1, self)
        except SocketkitError as exc:
            self.abort(str(exc), error=True)
        except OSError as exc:
            self.abort(f"cannot open {self.link.sides[1].name}: {exc.strerror or exc}", error=True)
        finally:
            self._opening = None

    def data_received(self, data: bytes) -> None:
        # The relay's hot path, as the echo service's: bookkeeping inlined.
        if self._proxy is not None:
            ConnectionProtocol.data_received(self, data)
            return
        self.bytes_in += len(data)  # the engine's idle sweep sees this progress
        self.sink.write(data)

    def received(self, data: bytes) -> None:
        # After a PROXY header: the base class's path (TLS records, if TLS follows).
        if isinstance(self._tls, TLSLayer):
            self._tls.data_received(data)
        else:
            self.sink.write(data)

    def ended(self) -> bool:
        self.link.ended(0)
        return True

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.link.sink_full(0)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.idle_ticks = 0
        self.link.sink_drained(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(0, exc)
        if self.link.completed:
            self._closed(exc)
        else:
            # The other side is still flushing (standard output, a program's
            # stdin): the connection counts until the link is done.
            self._lost = (exc,)

    def _closed(self, exc: Exception | None) -> None:
        other = self.link.sides[1].feeds
        if other is not None:
            self.bytes_out = other.count
        ConnectionProtocol.connection_lost(self, exc)

    def abort(self, reason: str, *, error: bool = False) -> None:
        super().abort(reason, error=error)
        self.link.abort(reason)

    def link_done(self, link: Link) -> None:
        """The link ended: its error (if any) is the connection's reason."""
        if link.error is not None and self.closing_reason is None:
            self.closing_reason = str(link.error)
        if self._lost is not None:
            self._closed(self._lost[0])

    def shutdown_requested(self) -> None:
        """A byte stream has no message boundary to stop at: the exchange in
        flight lasts until its two ends finish it (or the drain timeout)."""


def relay_factory(
    open_other: Opener, options: LinkOptions, target: str, tls: ssl.SSLContext | None = None
) -> ProtocolFactory:
    """The engine's protocol factory for connections relayed by ``open_other``."""
    return lambda host: RelayProtocol(host, open_other, options, target, tls)
