"""Hex dumps of the traffic, and the --crlf line-ending rewrite (sans-I/O).

``HexDumper.feed(direction, data)`` returns text lines in the classic
``hexdump -C`` layout, each prefixed with the direction (``>`` sent to the
peer, ``<`` received from it) and carrying a per-direction offset, so a
dump can be read back to the exact bytes::

    > 00000000  48 65 6c 6c 6f 0a                                |Hello.|

Each ``feed`` call is dumped on its own (a short last line is not held back
waiting for more bytes): a dump is for people watching a live exchange.
"""

from __future__ import annotations

__all__ = ["CrlfEncoder", "HexDumper"]

_PRINTABLE = bytes(range(0x20, 0x7F))


def _ascii(chunk: bytes) -> str:
    return "".join(chr(b) if b in _PRINTABLE else "." for b in chunk)


class HexDumper:
    """Turns chunks of traffic into hex dump lines, keeping an offset per direction."""

    def __init__(self) -> None:
        self._offsets: dict[str, int] = {}

    def feed(self, direction: str, data: bytes) -> str:
        """Dump ``data`` seen in ``direction`` (">" sent, "<" received); "" for no data."""
        offset = self._offsets.get(direction, 0)
        lines = []
        for start in range(0, len(data), 16):
            chunk = data[start : start + 16]
            left = " ".join(f"{b:02x}" for b in chunk[:8])
            right = " ".join(f"{b:02x}" for b in chunk[8:])
            hexpart = f"{left:<23}  {right:<23}"
            lines.append(f"{direction} {offset + start:08x}  {hexpart}  |{_ascii(chunk)}|\n")
        self._offsets[direction] = offset + len(data)
        return "".join(lines)


class CrlfEncoder:
    """Rewrite a lone LF as CRLF (``--crlf``), across chunk boundaries.

    A CR LF pair already in the input is kept as it is, even when the CR
    ends one chunk and the LF starts the next.
    """

    def __init__(self) -> None:
        self._last = 0

    def feed(self, data: bytes) -> bytes:
        if not data:
            return data
        head = b""
        if self._last == 0x0D and data[:1] == b"\n":
            head, data = b"\n", data[1:]  # the LF of a CR LF split across chunks
        self._last = (head + data)[-1]
        return head + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
