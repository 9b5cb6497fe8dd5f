"""Many connections and (optionally) standard I/O on the engine: ``listen -k`` and ``--broker``.

Without ``broker``: what clients send goes to standard output, what
standard input gives goes to every client (ncat -l -k); end of standard
input half-closes every client. With ``broker``: what a client sends goes
to every *other* client and to standard output, and standard input goes to
every client, as with ncat (the listener takes part in the chat); end of
standard input only stops reading it, the chat goes on. ``--send-only``
keeps standard output out, ``--recv-only`` standard input.

Flow control is shared: while any destination (a client, or standard
output) is above its high-water mark, every source (the clients and
standard input) is paused, so one slow member holds the others back
instead of making the hub buffer without bound.

The hub keeps its sources and destinations as sets of transports, so
standard I/O as a member is one more source and one more destination.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..server import ConnectionHost, ConnectionProtocol, ServerLog
from ._link import RECEIVED, SENT, WRITE_HIGH_WATER, WRITE_LOW_WATER, LinkOptions
from ._sides import stdio_transports

__all__ = ["Hub"]


class Hub:
    """The members of one ``listen -k`` or ``--broker``, and the bytes between them."""

    def __init__(self, log: ServerLog, *, broker: bool, options: LinkOptions) -> None:
        self.log = log
        self.broker = broker
        self.options = options
        self.members: set[HubMember] = set()
        self._full: set[object] = set()
        self._stdin: Any = None
        self._stdout: Any = None
        self._stdin_ended = False
        # What clients sent before standard output was open (the first
        # client may come while it is being opened).
        self._early: list[bytes] | None = []

    async def start(self) -> None:
        """Open standard I/O."""
        stdio = _StdioProtocol(self)
        read = self.options.a_to_b
        self._stdin, self._stdout, _ = await stdio_transports(stdio, stdio, read=read)
        early, self._early = self._early or [], None
        for data in early:
            self._stdout.write(data)
        if self._stdin is not None and not self._full:
            self._stdin.resume_reading()
        self._stdin_ended = not read

    def factory(self, host: ConnectionHost) -> ConnectionProtocol:
        return HubMember(host, self)

    # ------------------------------------------------------------- traffic

    def from_member(self, member: HubMember, data: bytes) -> None:
        if self.options.observer is not None:
            self.options.observer(RECEIVED, data)
        if self.broker:
            for other in self.members:
                if other is not member and other.transport is not None:
                    other.bytes_out += len(data)
                    other.transport.write(data)
        if self.options.b_to_a:
            if self._early is not None:
                self._early.append(data)
            elif self._stdout is not None:
                self._stdout.write(data)

    def from_stdin(self, data: bytes) -> None:
        if self.options.transform is not None:
            data = self.options.transform(data)
        if self.options.observer is not None:
            self.options.observer(SENT, data)
        for member in self.members:
            if member.transport is not None:
                member.bytes_out += len(data)
                member.transport.write(data)

    def stdin_ended(self) -> None:
        self._stdin_ended = True
        if self.broker:
            return  # the clients' chat goes on
        for member in self.members:
            if member.transport is not None and member.transport.can_write_eof():
                member.transport.write_eof()

    # ------------------------------------------------------------ flow control

    def _sources(self) -> list[Any]:
        sources = [m.transport for m in self.members if m.transport is not None]
        if self._stdin is not None and not self._stdin_ended:
            sources.append(self._stdin)
        return sources

    def full(self, who: object) -> None:
        if not self._full:
            for source in self._sources():
                with contextlib.suppress(RuntimeError, AttributeError):
                    source.pause_reading()
        self._full.add(who)

    def drained(self, who: object) -> None:
        self._full.discard(who)
        if not self._full:
            for source in self._sources():
                with contextlib.suppress(RuntimeError, AttributeError):
                    source.resume_reading()

    def joined(self, member: HubMember) -> None:
        self.members.add(member)
        if self._full and member.transport is not None:
            member.transport.pause_reading()
        if self._stdin_ended and not self.broker and member.transport is not None:
            member.transport.write_eof()

    def left(self, member: HubMember) -> None:
        self.members.discard(member)
        self.drained(member)


class HubMember(ConnectionProtocol):
    """One client of a hub."""

    __slots__ = ("hub",)

    def __init__(self, host: ConnectionHost, hub: Hub) -> None:
        super().__init__(host)
        self.hub = hub

    def started(self) -> None:
        self.hub.joined(self)

    def received(self, data: bytes) -> None:
        self.hub.from_member(self, data)

    def ended(self) -> bool | None:
        return None  # the client is done: close it (what others send no longer reaches it)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.hub.full(self)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.idle_ticks = 0
        self.hub.drained(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.left(self)
        super().connection_lost(exc)

    def shutdown_requested(self) -> None:
        """Chat members leave when they want (or at the drain timeout)."""


class _StdioProtocol(asyncio.Protocol):
    """Standard input and output of a hub (one protocol for both pipe transports)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        with contextlib.suppress(AttributeError, NotImplementedError):
            transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.hub.from_stdin(data)

    def eof_received(self) -> bool:
        self.hub.stdin_ended()
        return True

    def pause_writing(self) -> None:
        self.hub.full(self)

    def resume_writing(self) -> None:
        self.hub.drained(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.hub.log.event(f"stdio: {exc}", "closed", True)
