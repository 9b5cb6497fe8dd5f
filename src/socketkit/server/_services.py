"""The services a socketkit server offers, as asyncio protocols.

One ``ConnectionProtocol`` base does the bookkeeping every connection needs
(registration with the engine, counters, idle time, backpressure, a logged
reason when it ends); each service adds only what it does with the bytes.

The per-message path is kept lean: ``data_received`` works on the bytes it
is given, with no coroutine or extra syscall per message, no logging, and a
``ReceiveBuffer`` only for framed services.

Backpressure: when the transport's write buffer passes its high-water mark
(the peer reads slower than it sends), the protocol stops reading from that
peer until the buffer drains, so a slow reader never makes the server buffer
without bound (asyncio ``pause_writing``/``resume_writing``).

Services (RFC numbers give the classic behaviour):
    hello     the lecture: print each message, answer "Hello from server"
    echo      RFC 862: send back every byte (or every frame)
    discard   RFC 863: read and drop
    chargen   RFC 864: a rotating 72-character pattern, as fast as read
    daytime   RFC 867: the date and time as text, then close
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, cast

from ..address import format_sockaddr
from ..errors import FramingError, SocketkitError
from ..framing import Codec, LectureCodec, ReceiveBuffer
from ..framing.proxy import maybe_parse_proxy_header

if TYPE_CHECKING:
    from ._engine import ConnectionHost

__all__ = [
    "HELLO_REPLY",
    "SERVICES",
    "UDP_HELLO_REPLY",
    "Chargen",
    "ConnectionProtocol",
    "Daytime",
    "Discard",
    "Echo",
    "Hello",
    "ProtocolService",
    "Service",
    "chargen_line",
    "daytime_text",
]

#: Bytes the transport may hold for a slow reader before we stop reading
#: from it: 256 KiB keeps memory per connection small and bulk transfer fast.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024

#: The lecture's TCP server answers every message with this.
HELLO_REPLY = b"Hello from server"
#: The lecture's UDP server answers every datagram with this.
UDP_HELLO_REPLY = b"Message received"


def daytime_text() -> bytes:
    """RFC 867 leaves the format free; this is the common ctime-like one."""
    return time.strftime("%A, %B %d, %Y %H:%M:%S-%Z\r\n").encode("ascii", "replace")


_CHARGEN_CHARS = bytes(range(33, 127))  # the 95 printable ASCII characters


def chargen_line(n: int) -> bytes:
    """Line ``n`` of the RFC 864 pattern: 72 characters starting one further on."""
    start = n % len(_CHARGEN_CHARS)
    doubled = _CHARGEN_CHARS + _CHARGEN_CHARS
    return doubled[start : start + 72] + b"\r\n"


_CHARGEN_BLOCK = b"".join(chargen_line(i) for i in range(len(_CHARGEN_CHARS)))
#: RFC 864 over UDP: a datagram of 0 to 512 characters, here always 512.
_CHARGEN_DATAGRAM = _CHARGEN_BLOCK[:512]


class ConnectionProtocol(asyncio.Protocol):
    """Bookkeeping shared by every service's connections."""

    __slots__ = (
        "_proxy",
        "address",
        "bytes_in",
        "bytes_out",
        "closing_reason",
        "header_size",
        "host",
        "idle_ticks",
        "peer",
        "seen_in",
        "transport",
        "writing_paused",
    )

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        #: Who is at the other end: the engine sets it from accept()'s address
        #: (a PROXY header may replace it); getpeername() can fail by now.
        self.peer = "?"
        #: The sockaddr accept() returned, kept when a PROXY header is expected
        #: (it is then the balancer's); None otherwise.
        self.address: object = None
        self.bytes_in = 0
        self.bytes_out = 0
        #: Bytes of a PROXY protocol header at the start of the stream.
        self.header_size = 0
        # Sweeps of the idle timer since this connection last made progress:
        # the sweep compares ``bytes_in`` with what it saw last time
        # (``seen_in``), and a full write buffer that drains resets the count.
        # Nothing is done per message, not even resetting a counter.
        self.idle_ticks = 0
        self.seen_in = 0
        self.writing_paused = False
        self.closing_reason: str | None = None
        # Bytes of a PROXY protocol header still being read; None once done
        # (or when the server does not expect one).
        self._proxy: ReceiveBuffer | None = None

    # asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.host.opened(self)
        if self.host.proxy_protocol:
            self._proxy = ReceiveBuffer()
        else:
            self._begin()

    def _begin(self) -> None:
        self.host.log.event(f"{self.peer}: connected", "connected", True, peer=self.peer)
        self.started()

    def _read_proxy_header(self, data: bytes) -> bytes | None:
        """Take the PROXY header off the front; return the bytes after it, if any."""
        buffer = self._proxy
        assert buffer is not None
        buffer.feed(data)
        try:
            header = maybe_parse_proxy_header(buffer)
        except FramingError as exc:
            self.abort(str(exc), error=True)
            return None
        if header is None:
            return None
        self._proxy = None
        # A header without a source (v1 UNKNOWN, v2 LOCAL: a balancer's health
        # check) names nobody, so the connection's own address is judged:
        # skipping the check would let any client in by sending one.
        via = self.peer
        if header.source is not None:
            self.peer = format_sockaddr(header.source)
        refusal = self.host.refusal(header.source or self.address)
        if refusal is not None:
            self.host.stats.refused += 1
            suffix = (
                f" (via {via})" if header.source is not None else " (PROXY header names no client)"
            )
            self.abort(f"refused: {refusal}{suffix}")
            return None
        self._begin()
        rest = buffer.extract_all()
        self.header_size = self.bytes_in - len(rest)
        return rest or None

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.closing_reason
        if reason is None and exc is not None:
            reason = str(exc) or type(exc).__name__
        self.host.closed(self, reason)
        self.transport = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.idle_ticks = 0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self.writable()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._proxy is not None:
            rest = self._read_proxy_header(data)
            if rest is None or self.transport is None:
                return
            data = rest
        try:
            self.received(data)
        except FramingError as exc:
            self.abort(f"{'peer broke framing' if exc.remote else 'framing'}: {exc}", error=True)
        except SocketkitError as exc:
            self.abort(str(exc), error=True)

    def eof_received(self) -> bool | None:
        return self.ended()

    # helpers for services --------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes (buffered by the transport, subject to backpressure)."""
        if self.transport is not None:
            self.bytes_out += len(data)
            self.transport.write(data)

    def close(self, reason: str | None = None) -> None:
        """Close after what is buffered has been sent."""
        if self.closing_reason is None:
            self.closing_reason = reason
        if self.transport is not None:
            self.transport.close()

    def abort(self, reason: str, *, error: bool = False) -> None:
        """Drop the connection now (buffered data is lost)."""
        if error:
            self.host.stats.errors += 1
        if self.closing_reason is None:
            self.closing_reason = reason
        if self.transport is not None:
            self.transport.abort()

    # what services override ----------------------------------------------

    def started(self) -> None:
        """The connection is up."""

    def received(self, data: bytes) -> None:
        """Bytes arrived."""

    def ended(self) -> bool | None:
        """The peer half-closed. Return True to keep the write side open."""
        return None

    def writable(self) -> None:
        """The write buffer drained below its low-water mark."""

    def shutdown_requested(self) -> None:
        """The server is draining: finish the exchange in flight, then close."""
        self.close()


class FramedProtocol(ConnectionProtocol):
    """A service that works on whole messages cut by a codec."""

    __slots__ = ("buffer", "codec", "draining")

    def __init__(self, host: ConnectionHost, codec: Codec) -> None:
        super().__init__(host)
        self.codec = codec
        self.buffer = ReceiveBuffer()
        self.draining = False

    def received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer.feed(data)
        decode = self.codec.maybe_decode
        while self.transport is not None and (message := decode(buffer)) is not None:
            self.message(message)
        if self.draining and not buffer:
            self.close()

    def ended(self) -> bool | None:
        try:
            message = self.codec.decode_eof(self.buffer)
        except SocketkitError as exc:
            self.abort(f"peer ended mid-message: {exc}", error=True)
            return None
        if message is not None:
            self.message(message)
        return None

    def message(self, message: bytes) -> None:
        """One whole message arrived."""

    def shutdown_requested(self) -> None:
        """Close between messages; a message half-received is finished first."""
        self.draining = True
        if not self.buffer:
            self.close()


class HelloProtocol(FramedProtocol):
    """The lecture's exchange: print each message, answer ``Hello from server``.

    A line is answered with a line and raw bytes with raw bytes, so that a
    Java client (which reads a line) and a C client (which reads what comes)
    both get what they wait for. After a line the connection stays open for
    more lines (several exchanges over one connection); after a raw message
    the server closes, as the lecture's server does after its one exchange,
    so a client that reads until the end of the stream is not left waiting.
    """

    __slots__ = ("reply",)

    def __init__(self, host: ConnectionHost, codec: Codec, reply: bytes) -> None:
        super().__init__(host, codec)
        self.reply = reply

    def started(self) -> None:
        self.host.log.connected(self.peer)

    def message(self, message: bytes) -> None:
        self.host.log.received(self.peer, message)
        if isinstance(self.codec, LectureCodec):
            if message.endswith(b"\n"):
                self.write(self.reply + b"\n")
            else:
                self.write(self.reply)
                self.close()
        else:
            self.write(self.codec.encode(self.reply))


class EchoProtocol(ConnectionProtocol):
    """RFC 862 over raw bytes: every byte back, in order; half-close after the rest."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        # The hottest path of the engine: one counter and the write. What is
        # sent is what was received less a PROXY header, so ``bytes_out`` is
        # worked out once, when the connection ends.
        if self._proxy is None:
            self.bytes_in += len(data)
            self.transport.write(data)  # type: ignore[union-attr]
        else:
            ConnectionProtocol.data_received(self, data)

    def received(self, data: bytes) -> None:
        # The bytes that came with a PROXY header (the base class's path).
        self.transport.write(data)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.bytes_out = self.bytes_in - self.header_size
        super().connection_lost(exc)

    def shutdown_requested(self) -> None:
        """A byte stream has no message boundary to stop at: the exchange in
        flight lasts until the client ends it (or the drain timeout)."""


class FramedEchoProtocol(FramedProtocol):
    """Echo of whole frames: lines or length-prefixed messages."""

    __slots__ = ()

    def message(self, message: bytes) -> None:
        self.write(self.codec.encode(message))


class DiscardProtocol(ConnectionProtocol):
    """RFC 863: read everything, send nothing."""

    __slots__ = ()

    def shutdown_requested(self) -> None:
        """Like echo: wait for the client to finish sending."""


class ChargenProtocol(ConnectionProtocol):
    """RFC 864: send the character pattern until the client goes away."""

    __slots__ = ("_scheduled",)

    #: Blocks queued per turn of the loop, so one client cannot hog the loop.
    BLOCKS_PER_TURN = 8

    def __init__(self, host: ConnectionHost) -> None:
        super().__init__(host)
        self._scheduled = False

    def started(self) -> None:
        self._pump()

    def writable(self) -> None:
        self._pump()

    def _pump(self) -> None:
        self._scheduled = False
        for _ in range(self.BLOCKS_PER_TURN):
            if self.transport is None or self.writing_paused or self.transport.is_closing():
                return
            self.write(_CHARGEN_BLOCK)
        if not self.writing_paused and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)


class DaytimeProtocol(ConnectionProtocol):
    """RFC 867: send the date and time, then close."""

    __slots__ = ()

    def started(self) -> None:
        self.write(daytime_text())
        self.close()


#: Makes the protocol of one new connection, given the engine that runs it.
ProtocolFactory = Callable[["ConnectionHost"], ConnectionProtocol]


class Service:
    """What a server does with its clients: the protocol of each connection and
    the answer to each datagram.

    The engine asks a service only through these members, never by its name;
    a service of one's own subclasses this (``HandlerService`` runs a
    coroutine per connection).

    Attributes:
        name: what logs and the command line call it.
        shows_datagrams: the datagram engine prints each datagram it receives
            (the lecture's ``Received: ...``).
        echoes_datagrams: the answer to a datagram is the datagram itself, so
            the datagram engine may send a batch back untouched.
    """

    name: ClassVar[str] = "service"
    shows_datagrams: ClassVar[bool] = False
    echoes_datagrams: ClassVar[bool] = False

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        """Makes the protocol of each new connection, given the engine.

        Args:
            codec: the framing to read and write with (None: the service's
                own default; services on raw bytes ignore it).
        """
        raise NotImplementedError

    def answer_datagram(self, data: bytes) -> bytes | None:
        """The reply to one datagram (None: no reply), RFC 862-867 for UDP."""
        return data if self.echoes_datagrams else None


class ProtocolService(Service):
    """A service given by its protocol factory: a relay's or a proxy's connections,
    whose protocols are written against ``ConnectionProtocol`` elsewhere.

    Args:
        factory: makes the protocol of each connection; there is no answer
            to datagrams (stream servers only).
    """

    name = "protocol"

    def __init__(self, factory: ProtocolFactory) -> None:
        self._factory = factory

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        return self._factory


class Hello(Service):
    """The lecture's exchange: print each message, answer with ``reply``.

    Args:
        reply: the answer (default: ``Hello from server`` to a connection,
            ``Message received`` to a datagram, as the lecture's servers say).
    """

    name = "hello"
    shows_datagrams = True

    def __init__(self, reply: bytes | None = None) -> None:
        self.reply = reply

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        hello_codec = codec or LectureCodec()
        reply = HELLO_REPLY if self.reply is None else self.reply
        return lambda host: HelloProtocol(host, hello_codec, reply)

    def answer_datagram(self, data: bytes) -> bytes | None:
        return UDP_HELLO_REPLY if self.reply is None else self.reply


class Echo(Service):
    """RFC 862: every byte back (with a codec: every message, re-encoded)."""

    name = "echo"
    echoes_datagrams = True

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        if codec is None:
            return EchoProtocol
        return lambda host: FramedEchoProtocol(host, codec)


class Discard(Service):
    """RFC 863: read and drop; no answer to a datagram."""

    name = "discard"

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        return DiscardProtocol


class Chargen(Service):
    """RFC 864: the character pattern, as fast as the client reads (512 bytes per datagram)."""

    name = "chargen"

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        return ChargenProtocol

    def answer_datagram(self, data: bytes) -> bytes | None:
        return _CHARGEN_DATAGRAM


class Daytime(Service):
    """RFC 867: the date and time as text, then close."""

    name = "daytime"

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        return DaytimeProtocol

    def answer_datagram(self, data: bytes) -> bytes | None:
        return daytime_text()


#: The built-in services by name: what ``--service`` chooses from.
SERVICES: Mapping[str, type[Service]] = MappingProxyType(
    {cls.name: cls for cls in (Hello, Echo, Discard, Chargen, Daytime)}
)
