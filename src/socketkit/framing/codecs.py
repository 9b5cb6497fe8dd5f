"""Sans-I/O framing codecs: bytes in, messages out; messages in, bytes out.

TCP is a byte stream: one ``recv`` returns whatever has arrived, part of a
message or several. A codec turns that stream back into messages and is the
only thing that decides where one ends. Codecs here do no I/O, keep no clock
and print nothing; the ``sync`` and ``aio`` layers feed them.

Each codec has a maximum message size and raises ``MessageTooLargeError`` as
soon as the buffered bytes prove a message is over it, instead of growing a
buffer without bound. End of stream is ``b""``; a codec decides whether bytes
left over at that point are a final message or an ``IncompleteReadError``.

Codecs:
    ``RawCodec``            each read is a message (at most ``max_chunk_size``)
    ``LineCodec``           LF or CRLF terminated lines, ``max_line_length``
    ``LengthPrefixedCodec`` 32-bit unsigned big-endian length, then the body
    ``LectureCodec``        a line if one is there, else what arrived: the
                            lecture server's rule, which answers a C client
                            (no newline, one send) and a Java client (one line)

A codec is stateless apart from its settings; the bytes live in a
``ReceiveBuffer`` so that one connection can switch between codecs and
``receive_exactly`` without losing buffered data. ``Decoder`` pairs a codec
with its own buffer for stand-alone use.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Protocol

from ..errors import FramingError, IncompleteReadError, MessageTooLargeError
from ._buffer import ReceiveBuffer

__all__ = [
    "DEFAULT_MAX_CHUNK_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LECTURE_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "Codec",
    "Decoder",
    "LectureCodec",
    "LengthPrefixedCodec",
    "LineCodec",
    "RawCodec",
]

#: 64 KiB: the largest read a raw codec hands out at once; a typical socket
#: buffer's worth, big enough for bulk transfer without huge allocations.
DEFAULT_MAX_CHUNK_SIZE = 64 * 1024
#: 64 KiB: generous for text protocols (HTTP servers cap header lines at 8 KiB)
#: yet small enough that a peer that never sends a newline cannot eat memory.
DEFAULT_MAX_LINE_LENGTH = 64 * 1024
#: 16 MiB: a length prefix can claim up to 4 GiB; refusing above this keeps a
#: single hostile header from reserving gigabytes.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
#: 1023: the lecture's C programs read into a 1024-byte buffer, one byte of
#: it kept for the terminating NUL.
DEFAULT_MAX_LECTURE_SIZE = 1023

_U32 = struct.Struct("!I")  # network byte order (big-endian), RFC 1700


class Codec(Protocol):
    """What every framing codec provides."""

    @property
    def max_message_size(self) -> int:
        """The largest message this codec accepts, in bytes."""
        ...

    def maybe_decode(self, buffer: ReceiveBuffer) -> bytes | None:
        """Consume one whole message from ``buffer``, or return None for now.

        Raises:
            MessageTooLargeError: the buffered bytes prove the message is too big.
        """
        ...

    def decode_eof(self, buffer: ReceiveBuffer) -> bytes | None:
        """At end of stream: the final message from leftover bytes, or None.

        Raises:
            IncompleteReadError: leftover bytes that cannot be a message.
        """
        ...

    def encode(self, message: bytes) -> bytes:
        """The bytes to send for one message.

        Raises:
            FramingError: the message cannot be framed (``remote`` False).
        """
        ...


class RawCodec:
    """Each read is one message: no framing at all, bytes pass as they come."""

    __slots__ = ("max_chunk_size",)

    def __init__(self, max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE) -> None:
        if max_chunk_size < 1:
            raise ValueError("max_chunk_size must be at least 1")
        self.max_chunk_size = max_chunk_size

    @property
    def max_message_size(self) -> int:
        return self.max_chunk_size

    def maybe_decode(self, buffer: ReceiveBuffer) -> bytes | None:
        if not buffer:
            return None
        return buffer.extract(self.max_chunk_size)

    def decode_eof(self, buffer: ReceiveBuffer) -> bytes | None:
        return self.maybe_decode(buffer)

    def encode(self, message: bytes) -> bytes:
        return bytes(message)


class LineCodec:
    """Lines ended by LF or CRLF; messages are the lines without their ending.

    Args:
        max_line_length: the longest line accepted, not counting its ending.
        crlf: end encoded lines with CRLF (as network protocols do) instead of LF.
        final_line_at_eof: at end of stream, hand out an unterminated last line
            as a message (what Java's ``readLine`` and Python's ``readline``
            do) instead of raising ``IncompleteReadError``.
    """

    __slots__ = ("crlf", "final_line_at_eof", "max_line_length")

    def __init__(
        self,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        *,
        crlf: bool = False,
        final_line_at_eof: bool = True,
    ) -> None:
        if max_line_length < 0:
            raise ValueError("max_line_length must not be negative")
        self.max_line_length = max_line_length
        self.crlf = crlf
        self.final_line_at_eof = final_line_at_eof

    @property
    def max_message_size(self) -> int:
        return self.max_line_length

    def maybe_decode(self, buffer: ReceiveBuffer) -> bytes | None:
        index = buffer.find_newline()
        if index < 0:
            # Allow one extra byte: it may be the CR of a CRLF still in flight.
            if len(buffer) > self.max_line_length + 1:
                self._too_long(len(buffer))
            return None
        body = buffer.extract_line(index)
        if len(body) > self.max_line_length:
            self._too_long(len(body))
        return body

    def decode_eof(self, buffer: ReceiveBuffer) -> bytes | None:
        line = self.maybe_decode(buffer)
        if line is not None or not buffer:
            return line
        if not self.final_line_at_eof:
            rest = buffer.extract_all()
            raise IncompleteReadError(
                f"stream ended in the middle of a line ({len(rest)} bytes without a newline)",
                partial=rest,
            )
        rest = buffer.extract_all()
        if len(rest) > self.max_line_length:
            self._too_long(len(rest))
        return rest

    def encode(self, message: bytes) -> bytes:
        if b"\n" in message:
            raise FramingError("a line to send must not contain a newline", remote=False)
        if len(message) > self.max_line_length:
            raise MessageTooLargeError(
                f"line of {len(message)} bytes is over the limit of {self.max_line_length}",
                size=len(message),
                limit=self.max_line_length,
                remote=False,
            )
        return bytes(message) + (b"\r\n" if self.crlf else b"\n")

    def _too_long(self, size: int) -> None:
        raise MessageTooLargeError(
            f"line longer than {self.max_line_length} bytes (received {size} without a newline)",
            size=size,
            limit=self.max_line_length,
        )


class LengthPrefixedCodec:
    """A 32-bit unsigned length in network byte order, then that many bytes."""

    __slots__ = ("max_frame_size",)

    header_size = _U32.size

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 <= max_frame_size <= 0xFFFFFFFF:
            raise ValueError("max_frame_size must be from 0 to 2**32 - 1")
        self.max_frame_size = max_frame_size

    @property
    def max_message_size(self) -> int:
        return self.max_frame_size

    def maybe_decode(self, buffer: ReceiveBuffer) -> bytes | None:
        if len(buffer) < 4:
            return None
        (length,) = _U32.unpack(buffer.peek(4))
        if length > self.max_frame_size:
            raise MessageTooLargeError(
                f"frame header announces {length} bytes, over the limit of {self.max_frame_size}",
                size=length,
                limit=self.max_frame_size,
            )
        if len(buffer) < 4 + length:
            return None
        buffer.discard(4)
        return buffer.extract(length)

    def decode_eof(self, buffer: ReceiveBuffer) -> bytes | None:
        message = self.maybe_decode(buffer)
        if message is not None or not buffer:
            return message
        rest = buffer.extract_all()
        expected = _U32.unpack(rest[:4])[0] + 4 if len(rest) >= 4 else None
        raise IncompleteReadError(
            f"stream ended in the middle of a frame ({len(rest)} of "
            f"{expected if expected is not None else 'at least 4'} bytes)",
            partial=rest,
            expected=expected,
        )

    def encode(self, message: bytes) -> bytes:
        if len(message) > self.max_frame_size:
            raise MessageTooLargeError(
                f"frame of {len(message)} bytes is over the limit of {self.max_frame_size}",
                size=len(message),
                limit=self.max_frame_size,
                remote=False,
            )
        return _U32.pack(len(message)) + message


class LectureCodec:
    """The lecture server's message rule: a line if there is one, else what arrived.

    The C and Python clients send their message without a newline in one
    ``send`` and wait for the answer, so waiting for a newline would hang;
    Java clients send a line. Taking "one line, or else everything buffered"
    answers both. Messages keep their line ending (if any) so the server can
    answer a line with a line and raw bytes with raw bytes.

    This codec depends on how the stream was split into reads, by design:
    it is what the lecture's single ``recv`` does.
    """

    __slots__ = ("max_size",)

    def __init__(self, max_size: int = DEFAULT_MAX_LECTURE_SIZE) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size

    @property
    def max_message_size(self) -> int:
        return self.max_size

    def maybe_decode(self, buffer: ReceiveBuffer) -> bytes | None:
        if not buffer:
            return None
        index = buffer.find_newline()
        if 0 <= index < self.max_size:
            return buffer.extract(index + 1)
        return buffer.extract(self.max_size)

    def decode_eof(self, buffer: ReceiveBuffer) -> bytes | None:
        return self.maybe_decode(buffer)

    def encode(self, message: bytes) -> bytes:
        return bytes(message)


class Decoder:
    """A codec with its own receive buffer, for stand-alone sans-I/O use.

    >>> d = Decoder(LineCodec())
    >>> d.feed(b"one\\ntw")
    >>> list(d)
    [b'one']
    >>> d.feed(b"o\\n")
    >>> d.feed(b"")
    >>> list(d)
    [b'two']
    """

    __slots__ = ("_eof", "buffer", "codec")

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.buffer = ReceiveBuffer()
        self._eof = False

    @property
    def at_eof(self) -> bool:
        """True once ``feed(b"")`` was called."""
        return self._eof

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` marks the end of the stream."""
        if self._eof:
            if data:
                raise FramingError("data fed after end of stream", remote=False)
            return
        if data:
            self.buffer.feed(data)
        else:
            self._eof = True

    def maybe_message(self) -> bytes | None:
        """The next whole message, or None until enough bytes have arrived."""
        message = self.codec.maybe_decode(self.buffer)
        if message is None and self._eof:
            message = self.codec.decode_eof(self.buffer)
        return message

    def __iter__(self) -> Iterator[bytes]:
        while (message := self.maybe_message()) is not None:
            yield message
