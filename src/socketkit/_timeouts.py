"""Timeout defaults shared by the blocking and asyncio layers.

Every blocking call takes a ``timeout`` in seconds. ``DEFAULT`` means "the
connection's own timeout"; ``None`` means wait for ever, which must be asked
for explicitly: blocking for ever on a silent peer is the lecture's classic
bug.
"""

from __future__ import annotations

import enum
import time

__all__ = [
    "DEFAULT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IO_TIMEOUT",
    "Deadline",
    "TimeoutArg",
]

#: 10 s to connect: far beyond a healthy network's handshake, short enough
#: that a dead host is reported while the user still waits for it.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: 60 s for one send or receive call: covers slow links and slow peers
#: without turning a vanished one into a hang.
DEFAULT_IO_TIMEOUT = 60.0


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default.DEFAULT
TimeoutArg = float | None | _Default


class Deadline:
    """A point in monotonic time that a multi-step call must finish by."""

    __slots__ = ("_end", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None for no limit."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())
