"""The one copy loop: a link moves bytes both ways between two sides, on the event loop.

Every command that moves bytes (``relay``, ``connect``, ``listen``, exec
through pipes) joins two *sides* with a ``Link``. A side is a byte source
and a byte sink, each an asyncio transport: for a socket (TCP, Unix, TLS)
both are the same transport; for standard I/O they are the read pipe of
fd 0 and the write pipe of fd 1; for a program, its stdout and stdin pipes.
What a side's transport delivers goes to its protocol (``SideProtocol``,
or the engine's ``RelayProtocol`` for an accepted connection), whose
``data_received`` writes it straight into the other side's sink: no
coroutine, no queue, no copy in between.

Flow control: when a sink's write buffer passes its high-water mark
(asyncio calls ``pause_writing`` on the sink's protocol), the link pauses
reading the *other* side's source, and resumes it once the buffer drained
below the low-water mark. Memory per link is therefore bounded by the two
sinks' buffers (``WRITE_HIGH_WATER`` each, plus one read in flight),
whatever the speeds; TCP's own flow control then pushes back on the sender.

End of stream: when a source ends, the link half-closes the other sink
(``write_eof``; a pipe closes) and the other direction keeps going; the
link ends once both directions have (or, with ``end_with_peer``, once the
remote side has: ncat's listener). A source that ``stays_open`` (standard
input on a terminal) is not waited for once the other direction ended, as
netcat exits when the peer closes. ``eof_linger`` bounds the wait for the
peer after end of input (``-q``); ``idle_timeout`` ends a link with no
progress either way (``-w``), counted in sweeps as the server engine does.

Errors: the first error on either side aborts both, and the result carries
that one reason. A write refused (EPIPE, ECONNRESET) by a peer that had
already ended its own stream cleanly is a close, not an error (netcat is
quiet there too); standard output closing under us (``| head``) is a quiet
end. Invariant: ``finish`` runs once; after it no callback touches a sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import BrokenError, SocketkitError, translate_os_error

__all__ = [
    "WRITE_HIGH_WATER",
    "WRITE_LOW_WATER",
    "Link",
    "LinkOptions",
    "LinkResult",
    "OutputClosedError",
    "PendingSink",
    "SideProtocol",
]

#: A sink holds at most this many bytes for a slow reader before the link
#: stops reading the side that feeds it (the engine's figure for servers).
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024

#: Directions as the hex dump shows them: a -> b is "sent", b -> a "received".
SENT = ">"
RECEIVED = "<"

#: Sweeps without progress before ``idle_timeout`` ends a link (see ``_sweep``).
_IDLE_TICKS = 4


class Source(Protocol):
    """What a link needs of a byte source (an asyncio read transport)."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """What a link needs of a byte sink (an asyncio write transport)."""

    def write(self, data: Any) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class OutputClosedError(BrokenError):
    """Standard output went away (``socketkit connect ... | head``): end quietly."""


@dataclass(slots=True)
class LinkOptions:
    """How a link runs.

    "a" is the local side (standard I/O, whichever index it has in the link:
    ``local``), "b" the remote one; "sent" means a -> b.

    Attributes:
        a_to_b, b_to_a: which directions run (``--send-only``/``--recv-only``).
        idle_timeout: end the link after this many seconds with no data either
            way (None: never). Links served by the engine use its sweep instead.
        eof_linger: once a -> b (standard input) ended, wait at most this long
            for the other direction (None: as long as it takes; 0: close at once).
        transform: rewrite a -> b data (``--crlf``).
        observer: called with (direction, bytes) for each chunk (hex dump).
        local: the index of the local side in the link.
        end_with_peer: the remote side's end of stream ends the link (after
            what is buffered is written), whether or not the local input has
            ended: ncat's listener, which exits when its client is done.
    """

    a_to_b: bool = True
    b_to_a: bool = True
    idle_timeout: float | None = None
    eof_linger: float | None = None
    transform: Callable[[bytes], bytes] | None = None
    observer: Callable[[str, bytes], None] | None = None
    local: int = 0
    end_with_peer: bool = False


@dataclass(slots=True)
class LinkResult:
    """What happened: byte counts each way, and why it ended."""

    sent: int = 0  # a -> b
    received: int = 0  # b -> a
    error: SocketkitError | None = None
    reason: str = "closed"


class PendingSink:
    """A sink that is not there yet: keeps what arrives until the side is attached."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)


class _Filter:
    """A sink seen through the hex dump and ``--crlf``: the slow path, used only with them."""

    __slots__ = ("direction", "observer", "sink", "transform")

    def __init__(
        self,
        sink: Any,
        direction: str,
        transform: Callable[[bytes], bytes] | None,
        observer: Callable[[str, bytes], None] | None,
    ) -> None:
        self.sink = sink
        self.direction = direction
        self.transform = transform
        self.observer = observer

    def write(self, data: bytes) -> None:
        if self.transform is not None:
            data = self.transform(data)
        if self.observer is not None:
            self.observer(self.direction, bytes(data))
        self.sink.write(data)


class _Drop:
    """The sink of a direction that does not run (``--send-only``/``--recv-only``)."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        pass


class _Side:
    """One side of a link: its source and sink, and where the other side's data goes."""

    __slots__ = (
        "ended",
        "feeds",
        "name",
        "sink",
        "sink_lost",
        "sink_protocol",
        "source",
        "stays_open",
        "writable",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        #: The direction that reads this side has ended (or never runs).
        self.ended = False
        self.source: Source | None = None
        self.sink: Any = None
        #: The protocol of a sink that is a transport of its own (a pipe),
        #: and whether it has reported its end (its buffer is then flushed).
        self.sink_protocol: Any = None
        self.sink_lost = False
        self.stays_open = False
        #: The protocol whose ``sink`` attribute receives this side's data
        #: (so ``data_received`` is one attribute lookup and one call).
        self.feeds: Any = None
        #: False once this side's sink failed or was closed.
        self.writable = True


class Link:
    """Two sides and the bytes between them (see the module docstring).

    Side 0 is ``a`` (standard I/O, or the accepted connection), side 1 ``b``.
    ``counter`` (default: the link itself) has its ``idle_ticks`` reset by
    every chunk; protocols count bytes in their own ``count``.
    """

    __slots__ = (
        "_done",
        "_flushing",
        "_linger",
        "_sweeper",
        "completed",
        "error",
        "finished",
        "idle_ticks",
        "options",
        "owner",
        "reason",
        "running",
        "sides",
    )

    def __init__(
        self,
        options: LinkOptions | None = None,
        names: tuple[str, str] = ("a", "b"),
        owner: Any = None,
    ) -> None:
        self.options = options or LinkOptions()
        self.sides = (_Side(names[0]), _Side(names[1]))
        for index, side in enumerate(self.sides):
            side.ended = not self._runs(index)
        self.error: SocketkitError | None = None
        self.reason = "closed"
        self.finished = False
        #: True once both sides are attached and bytes flow.
        self.running = False
        self.idle_ticks = 0
        #: Told when the link is done (``owner.link_done(link)``), if not None.
        self.owner = owner
        #: True once the link has ended and what it closed is flushed.
        self.completed = False
        self._done: asyncio.Future[LinkResult] | None = None
        self._linger: asyncio.TimerHandle | None = None
        #: Sides whose own sink is still flushing after ``finish``.
        self._flushing: set[int] | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------- set-up

    def _runs(self, index: int) -> bool:
        """Whether the direction that reads side ``index`` runs at all."""
        options = self.options
        return options.a_to_b if index == options.local else options.b_to_a

    def attach(
        self,
        index: int,
        source: Source | None,
        sink: Sink | None,
        protocol: Any,
        *,
        stays_open: bool = False,
        sink_protocol: Any = None,
    ) -> None:
        """Side ``index`` is open: ``protocol`` reads ``source`` and gets the other
        side's data into its ``sink`` attribute. Reading starts once both sides are.

        ``sink_protocol``: the protocol of a sink that is a transport of its
        own; the link is done only once it has flushed and closed.
        """
        side = self.sides[index]
        side.source, side.sink, side.feeds = source, sink, protocol
        side.stays_open = stays_open
        side.sink_protocol = sink_protocol
        if self.finished:  # the other side went away while this one was opening
            for transport in {id(t): t for t in (source, sink) if t is not None}.values():
                with contextlib.suppress(OSError, RuntimeError, AttributeError):
                    transport.close()
            return
        if source is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                source.pause_reading()
        if all(s.feeds is not None or s.source is None for s in self.sides) and all(
            s.sink is not None for s in self.sides
        ):
            self._start()

    def _sink_for(self, index: int) -> Any:
        """What data read from side ``index`` is written to."""
        options = self.options
        if not self._runs(index):
            return _Drop()
        sink = self.sides[1 - index].sink
        local = index == options.local
        transform = options.transform if local else None
        if transform is not None or options.observer is not None:
            return _Filter(sink, SENT if local else RECEIVED, transform, options.observer)
        return sink

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self.running = True
        for index, side in enumerate(self.sides):
            protocol = side.feeds
            if protocol is None:
                continue
            pending = protocol.sink
            protocol.sink = self._sink_for(index)
            if isinstance(pending, PendingSink):
                for chunk in pending.chunks:
                    protocol.sink.write(chunk)
        for index, side in enumerate(self.sides):
            if side.source is not None and not self.sides[index].ended:
                side.source.resume_reading()
        for index in (0, 1):
            if self.sides[index].ended:  # ended (or never runs) before both sides were there
                self._half_close(1 - index)
        local = self.options.local
        if self.sides[local].ended and self._runs(local):
            self._arm_linger()
        if self.options.idle_timeout is not None:
            self._arm_sweep(loop)
        self._check()

    # --------------------------------------------------- protocol callbacks

    def sink_full(self, index: int) -> None:
        """Side ``index``'s sink passed its high-water mark: stop reading the other side."""
        source = self.sides[1 - index].source
        if source is not None and not self.finished:
            with contextlib.suppress(RuntimeError, AttributeError):
                source.pause_reading()

    def sink_drained(self, index: int) -> None:
        """Side ``index``'s sink drained: read the other side again."""
        self.idle_ticks = 0
        source = self.sides[1 - index].source
        if source is not None and not self.finished and not self.sides[1 - index].ended:
            with contextlib.suppress(RuntimeError, AttributeError):
                source.resume_reading()

    def ended(self, index: int) -> None:
        """Side ``index``'s source reached end of stream."""
        if self.finished or self.sides[index].ended:
            return
        self.sides[index].ended = True
        if not self.running:
            return  # the rest happens when the link starts
        self._half_close(1 - index)
        if index == self.options.local:
            self._arm_linger()
        self._check()

    def _arm_linger(self) -> None:
        """Input ended: wait at most ``eof_linger`` for the peer (``-q``)."""
        if self.options.eof_linger is not None and self._linger is None:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(self.options.eof_linger, self._linger_expired)

    def lost(self, index: int, exc: BaseException | None, part: str = "both") -> None:
        """A transport of side ``index`` closed (``exc``: why, when it failed).

        ``part``: "both" for a side with one transport, "source" or "sink"
        when it has two (standard I/O, a program's pipes).
        """
        side = self.sides[index]
        if part == "sink":
            side.sink_lost = True
            if self.finished:
                if self._flushing is not None:
                    self._flushing.discard(index)
                    if not self._flushing:
                        self._complete()
                return
        if self.finished:
            return
        if exc is None:
            if part == "source":
                self.ended(index)
            elif part == "sink":
                side.writable = False
            else:
                # The transport closed: whatever the other side still sends
                # has nowhere to go.
                self.sides[index].ended = True
                side.writable = False
                self.finish("closed")
            return
        if isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET):
            if side.name == "stdio" and exc.errno == errno.EPIPE:
                self.finish("standard output closed", OutputClosedError("standard output closed"))
                return
            if self.sides[index].ended:
                # The peer ended its stream and then closed: what we still had
                # for it has nowhere to go, which is a close, not an error.
                side.writable = False
                self._check(force=True)
                return
        self.finish("error", self._translate(exc, side.name))

    @staticmethod
    def _translate(exc: BaseException, where: str) -> SocketkitError:
        if isinstance(exc, SocketkitError):
            return exc
        if isinstance(exc, OSError):
            return translate_os_error(exc, phase="relay", where=where)
        return SocketkitError(f"{where}: {exc}")

    # ------------------------------------------------------------- ending

    def _half_close(self, index: int) -> None:
        """No more data for side ``index``: half-close its sink (after what is buffered)."""
        side = self.sides[index]
        sink: Any = side.sink
        if sink is None or not side.writable or isinstance(sink, _Drop):
            return
        side.writable = False
        own_transport = sink is not side.source
        try:
            if own_transport:
                sink.close()  # a pipe of its own (standard output, a program's stdin)
            elif sink.can_write_eof():
                sink.write_eof()  # a socket: shutdown(SHUT_WR), or TLS close_notify first
        except (OSError, RuntimeError, AttributeError, NotImplementedError):
            pass

    def _check(self, force: bool = False) -> None:
        if self.finished:
            return
        eof = (self.sides[0].ended, self.sides[1].ended)
        if eof[0] and eof[1]:
            self.finish("closed")
            return
        remote = 1 - self.options.local
        if eof[remote] and self.options.end_with_peer and self._runs(remote):
            self.finish("closed")
            return
        # What is left reads from a terminal: the connection itself has
        # ended, as far as anyone can tell.
        both_ways = self.options.a_to_b and self.options.b_to_a
        for index in (0, 1):
            if both_ways and eof[1 - index] and not eof[index] and self.sides[index].stays_open:
                self.finish("closed")
                return
        if force and not self.sides[0].writable and not self.sides[1].writable:
            self.finish("closed")

    def _linger_expired(self) -> None:
        self.finish("closed after end of input")

    def _arm_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = self.options.idle_timeout
        assert timeout is not None
        self._sweeper = loop.call_later(max(timeout, 0.01) / _IDLE_TICKS, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.idle_ticks += 1
        if self.idle_ticks > _IDLE_TICKS:
            self.finish("idle timeout")
        elif not self.finished:
            self._arm_sweep(loop)

    def abort(self, reason: str, error: SocketkitError | None = None) -> None:
        """End the link now: both sides aborted, buffered data lost."""
        self.finish(reason, error, graceful=False)

    def finish(
        self, reason: str, error: SocketkitError | None = None, *, graceful: bool | None = None
    ) -> None:
        """End the link: close both sides (after their buffers, unless it failed)."""
        if self.finished:
            return
        self.finished = True
        self.reason = reason
        self.error = error
        if graceful is None:
            graceful = error is None
        for handle in (self._linger, self._sweeper):
            if handle is not None:
                handle.cancel()
        for side in self.sides:
            for transport in {id(t): t for t in (side.source, side.sink) if t is not None}.values():
                with contextlib.suppress(OSError, RuntimeError, AttributeError):
                    if graceful and transport is side.sink:
                        transport.close()
                    elif hasattr(transport, "abort"):
                        transport.abort()
                    else:
                        transport.close()
        if graceful:
            flushing = {
                i
                for i, side in enumerate(self.sides)
                if side.sink_protocol is not None and not side.sink_lost
            }
            if flushing:
                self._flushing = flushing
                return
        self._complete()

    def _complete(self) -> None:
        """Everything is closed (and flushed): report the result."""
        if self.completed:
            return
        self.completed = True
        if self._done is not None and not self._done.done():
            self._done.set_result(self.result())
        if self.owner is not None:
            self.owner.link_done(self)

    def wait(self) -> asyncio.Future[LinkResult]:
        """A future of the result (made on demand: a link served by the engine
        reports to its owner and needs none)."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self.completed:
                self._done.set_result(self.result())
        return self._done

    def result(self) -> LinkResult:
        counts = [getattr(side.feeds, "count", 0) for side in self.sides]
        local = self.options.local
        return LinkResult(counts[local], counts[1 - local], self.error, self.reason)


class SideProtocol(asyncio.Protocol):
    """The protocol of one side's transport: data straight into the other side's sink.

    ``part``: "both" for a socket (reading and writing one transport),
    "source" or "sink" when a side has two transports (standard I/O, pipes).
    """

    __slots__ = ("count", "counter", "index", "link", "part", "sink", "transport")

    def __init__(self, link: Link, index: int, part: str = "both", counter: Any = None) -> None:
        self.link = link
        self.index = index
        self.part = part
        self.counter: Any = counter if counter is not None else link
        self.count = 0
        self.sink: Any = PendingSink()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.part != "source":
            with contextlib.suppress(AttributeError, NotImplementedError):
                transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        # The relay's hot path: count, mark progress, hand the bytes on.
        self.count += len(data)
        self.counter.idle_ticks = 0
        self.sink.write(data)

    def eof_received(self) -> bool:
        self.link.ended(self.index)
        # A socket stays open for writing (half-close); a pipe just ends.
        return self.part == "both"

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(self.index, exc, self.part)

    def pause_writing(self) -> None:
        self.link.sink_full(self.index)

    def resume_writing(self) -> None:
        self.counter.idle_ticks = 0
        self.link.sink_drained(self.index)

    # SubprocessProtocol-shaped callbacks are not needed: pipes get their own
    # SideProtocol through connect_read_pipe / connect_write_pipe.
