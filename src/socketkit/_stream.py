"""The sans-I/O core of a stream connection, shared by ``sync`` and ``aio``.

Strategy (after h11's ``Connection``): ``StreamCore`` holds everything about
a connection that is not I/O: the bytes received but not yet consumed, the
peer's end of stream, this side's closed and half-closed state, and the
wording of every error. Each ``next_*`` method answers from the buffer, or
says ``NEED_DATA``; the I/O layers are fill loops around it::

    while (answer := core.next_exactly(n)) is NEED_DATA:
        core.feed(<one recv() or read(), b"" at end of stream>)

so that the blocking and the asyncio connection cannot drift apart in what
they return, buffer or raise. Only how bytes are waited for (a socket
timeout, ``asyncio.timeout``) stays in each layer.

Invariants: once ``eof`` is set no ``next_*`` answers ``NEED_DATA`` (the
stream is over: what is buffered is all there is), so a fill loop never
reads past the end of stream; bytes are consumed only by a call that
returns them, so a timeout or an error leaves them buffered for the next call.
"""

from __future__ import annotations

import enum
from typing import Literal

from ._timeouts import DEFAULT, TimeoutArg
from .errors import (
    BrokenError,
    ClosedError,
    IncompleteReadError,
    SocketkitError,
    UnsupportedError,
    timeout_error,
    translate_os_error,
)
from .framing import Codec, ReceiveBuffer

__all__ = ["NEED_DATA", "RECEIVE_SIZE", "NeedData", "StreamCore", "StreamFacts"]

#: Bytes asked of one recv() or read(): 64 KiB matches common socket buffer sizes.
RECEIVE_SIZE = 64 * 1024


class _Need(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: A ``next_*`` answer: nothing can be said until more bytes (or the end) arrive.
NEED_DATA = _Need.NEED_DATA
NeedData = Literal[_Need.NEED_DATA]


class StreamCore:
    """Buffer, end of stream, closed state and error wording of one connection."""

    __slots__ = ("buffer", "closed", "eof", "peer", "write_shut")

    def __init__(self, peer: str) -> None:
        #: Bytes received and not yet returned to the caller.
        self.buffer = ReceiveBuffer()
        #: The peer's end of stream was received.
        self.eof = False
        #: This side closed the connection.
        self.closed = False
        #: This side shut down writing (a half-close).
        self.write_shut = False
        #: The peer's address, formatted, for messages.
        self.peer = peer

    @property
    def at_eof(self) -> bool:
        """True once the peer's end of stream was seen and the buffer is empty."""
        return self.eof and not self.buffer

    # -- bytes in --------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Take the bytes of one read; ``b""`` is the peer's end of stream."""
        if data:
            self.buffer.feed(data)
        else:
            self.eof = True

    def next_some(self, max_bytes: int) -> bytes | NeedData:
        """What has arrived (at most ``max_bytes``); ``b""`` at end of stream."""
        if self.buffer:
            return self.buffer.extract(max_bytes)
        return b"" if self.eof else NEED_DATA

    def next_exactly(self, n: int) -> bytes | NeedData:
        """Exactly ``n`` bytes.

        Raises:
            IncompleteReadError: the stream ended first; it carries (and
                consumes) the bytes that came.
        """
        if len(self.buffer) >= n:
            return self.buffer.extract(n)
        if not self.eof:
            return NEED_DATA
        partial = self.buffer.extract_all()
        raise IncompleteReadError(
            f"{self.peer} closed the connection after {len(partial)} of {n} bytes",
            partial=partial,
            expected=n,
        )

    def next_message(self, codec: Codec) -> bytes | NeedData | None:
        """The next message framed by ``codec``; None at a clean end of stream.

        Raises:
            FramingError: whatever ``codec`` raises (too large, truncated).
        """
        message = codec.maybe_decode(self.buffer)
        if message is not None:
            return message
        return codec.decode_eof(self.buffer) if self.eof else NEED_DATA

    # -- state checks ----------------------------------------------------

    def check_open(self) -> None:
        """Raises ClosedError once this side closed the connection."""
        if self.closed:
            raise ClosedError(f"connection to {self.peer} is already closed")

    def check_send(self) -> None:
        """Raises ClosedError once closed or shut down for writing."""
        self.check_open()
        if self.write_shut:
            raise ClosedError(f"cannot send to {self.peer}: this side already shut down writing")

    def check_half_close(self, tls: bool) -> None:
        """Raises ClosedError once closed, UnsupportedError over TLS."""
        self.check_open()
        if tls:
            # Python's TLS layers cannot send a TCP FIN and go on reading:
            # SSLSocket.shutdown drops the TLS state, unwrap() loses data still
            # in flight from the peer, and an asyncio TLS transport has no
            # write_eof(). None of them is a half-close.
            raise UnsupportedError(
                f"half-close over TLS is not supported on the connection to {self.peer}"
            )

    # -- errors ----------------------------------------------------------

    def io_error(self, exc: OSError, phase: str, timeout: float | None) -> SocketkitError:
        """Our error for ``exc``, raised by a ``phase`` call limited to ``timeout`` s.

        BlockingIOError (EAGAIN) is a timeout too: once a deadline has run
        out the blocking layer's socket is non-blocking, and so it is with a
        caller's ``timeout=0`` ("only what is already there").
        """
        if isinstance(exc, TimeoutError | BlockingIOError):
            return timeout_error(phase, self.peer, timeout)
        return translate_os_error(exc, phase=phase, where=self.peer)

    def send_error(
        self, exc: OSError, timeout: float | None, sent: int | None, total: int
    ) -> SocketkitError:
        """Our error for a send of ``total`` bytes that failed after ``sent`` of them.

        ``sent`` is None when the layer cannot know (an asyncio transport
        that dropped its buffer when the connection broke).
        """
        error = self.io_error(exc, "send", timeout)
        if total and sent is not None:
            error.message += f" ({sent} of {total} bytes sent)"
        return error

    def half_close_error(self, exc: OSError) -> BrokenError:
        """Our error for a shutdown(SHUT_WR) that failed."""
        return BrokenError(
            f"cannot half-close the connection to {self.peer}: {exc.strerror}", errno=exc.errno
        )


class StreamFacts:
    """What both connection classes say about themselves, from one ``StreamCore``.

    A base class of ``sync.Connection`` and ``aio.Connection``: their
    addresses, default timeout, state and ``repr``; each adds its own I/O.
    """

    #: How ``repr`` names the class.
    _kind = "Connection"

    def __init__(self, *, peer: str, local: str, timeout: float | None) -> None:
        #: Default timeout, in seconds, of each call on this connection.
        self.timeout = timeout
        #: The peer's address, formatted (``127.0.0.1:51234``, ``unix:/p``).
        self.peer = peer
        #: This side's address, formatted.
        self.local = local
        self._core = StreamCore(peer)

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        return f"<{self._kind} {self.local} -> {self.peer} {state}>"

    def _call_timeout(self, timeout: TimeoutArg) -> float | None:
        """The limit of one call (``DEFAULT``: the connection's); ClosedError once closed."""
        self._core.check_open()
        return self.timeout if timeout is DEFAULT else timeout

    @property
    def closed(self) -> bool:
        """True once the connection was closed on this side."""
        return self._core.closed

    @property
    def at_eof(self) -> bool:
        """True once the peer's end of stream was seen and the buffer is empty."""
        return self._core.at_eof
