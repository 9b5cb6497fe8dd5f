"""A receive buffer that framing codecs read from.

Strategy (after h11's ``_receivebuffer.py``): bytes are appended at the end of
one ``bytearray`` and consumed from the front. CPython's bytearray deletes a
prefix in amortised constant time, so a long stream of small messages costs
no quadratic copying. Line searches remember how far they already looked, so
a line that arrives one byte at a time is scanned once, not once per byte.

Invariants: ``_scanned <= len(_data)``; bytes before ``_scanned`` contain no
newline.
"""

from __future__ import annotations

__all__ = ["ReceiveBuffer"]


class ReceiveBuffer:
    """Bytes received but not yet consumed by a codec."""

    __slots__ = ("_data", "_scanned")

    def __init__(self) -> None:
        self._data = bytearray()
        self._scanned = 0

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._data += data

    def peek(self, n: int | None = None) -> bytes:
        """Return (without consuming) the first ``n`` bytes, or all of them."""
        return bytes(self._data if n is None else self._data[:n])

    def extract(self, n: int) -> bytes:
        """Consume and return at most ``n`` bytes from the front."""
        out = bytes(self._data[:n])
        del self._data[:n]
        self._scanned = max(0, self._scanned - len(out))
        return out

    def discard(self, n: int) -> None:
        """Drop ``n`` bytes from the front without copying them out (a header)."""
        del self._data[:n]
        self._scanned = max(0, self._scanned - n)

    def extract_line(self, index: int) -> bytes:
        """Consume through the b"\n" at ``index``; return the line without LF or CRLF.

        One copy of the line's body, none of its ending.
        """
        data = self._data
        end = index - 1 if index and data[index - 1] == 13 else index  # 13: CR
        out = bytes(data[:end])
        del data[: index + 1]
        self._scanned = 0
        return out

    def extract_all(self) -> bytes:
        """Consume and return everything buffered."""
        out = bytes(self._data)
        self._data.clear()
        self._scanned = 0
        return out

    def maybe_extract_exactly(self, n: int) -> bytes | None:
        """Consume exactly ``n`` bytes, or return None if fewer are buffered."""
        if len(self._data) < n:
            return None
        return self.extract(n)

    def find_newline(self) -> int:
        """Index of the first b"\\n", or -1; remembers how far it has looked."""
        index = self._data.find(b"\n", self._scanned)
        self._scanned = len(self._data) if index < 0 else index
        return index
