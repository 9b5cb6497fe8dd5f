"""Trace events and the printer that writes them, one line each.

An event is one system call on one socket, recorded after the call returned
(or failed), so its line carries what the kernel answered: the new
descriptor, the byte count, the errno. Events are named by the lecture's
call (``send``, ``recv``); ``syscall`` says what Linux actually runs for it
(``send`` is ``sendto`` with no address, ``accept`` is ``accept4``), which is
what ``strace`` prints.

Line format (stable; tests and docs parse it)::

    [trace] fd 3 socket(AF_INET, SOCK_STREAM, 0) = 3
    [trace] fd 3 connect(127.0.0.1:8080) = 0
    [trace] fd 3 send(17 bytes "Hello from client") = 17

A child process (a server's workers) adds ``pid N`` after ``[trace]``; a
thread other than the main one adds ``tid N`` (its native id, the number
strace prints for it). Within one thread the lines are in system-call order;
between threads, two calls finishing at the same moment may print in either
order (each line is written after its call returns).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TextIO

__all__ = ["SYSCALLS", "TraceEvent", "TracePrinter", "preview"]

#: The Linux system call behind each traced call (what strace shows).
SYSCALLS = {
    "socket": "socket",
    "setsockopt": "setsockopt",
    "bind": "bind",
    "listen": "listen",
    "accept": "accept4",
    "connect": "connect",
    "send": "sendto",
    "sendto": "sendto",
    "recv": "recvfrom",
    "recvfrom": "recvfrom",
    "shutdown": "shutdown",
    "close": "close",
}

#: Bytes of payload shown in a preview.
PREVIEW_BYTES = 32

_PHASE_COLOUR = {
    "socket": "36",  # cyan: setting up
    "setsockopt": "36",
    "bind": "36",
    "listen": "36",
    "accept": "35",  # magenta: a connection appears
    "connect": "35",
    "send": "32",  # green: data
    "sendto": "32",
    "recv": "32",
    "recvfrom": "32",
    "shutdown": "33",  # yellow: tearing down
    "close": "33",
}


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One socket call.

    Attributes:
        call: the lecture's name of the call (``send``, ``recv``, ``accept``...).
        fd: the descriptor the call was made on (-1 when ``socket`` failed).
        args: the arguments, formatted for people.
        result: what the call returned, formatted (``3``, ``17``, ``0``).
        error: ``ECONNREFUSED (Connection refused)`` when the call failed.
        tid: the native id of the thread that made the call (0: not recorded).
    """

    call: str
    fd: int
    args: str
    result: str = "0"
    error: str | None = None
    tid: int = 0

    @property
    def syscall(self) -> str:
        """The Linux system call name strace prints for this call."""
        return SYSCALLS.get(self.call, self.call)

    def format(
        self, *, colour: bool = False, pid: int | None = None, main_tid: int | None = None
    ) -> str:
        """The event's line, without a newline."""
        outcome = f"-1 {self.error}" if self.error is not None else self.result
        name = self.call
        if colour:
            code = "31" if self.error is not None else _PHASE_COLOUR.get(self.call, "0")
            name = f"\x1b[1;{code}m{name}\x1b[0m"
            outcome = f"\x1b[31m{outcome}\x1b[0m" if self.error is not None else outcome
        who = f"pid {pid} " if pid is not None else ""
        if self.tid and main_tid is not None and self.tid != main_tid:
            who += f"tid {self.tid} "
        return f"[trace] {who}fd {self.fd} {name}({self.args}) = {outcome}"


def preview(data: bytes | bytearray | memoryview, limit: int = PREVIEW_BYTES) -> str:
    """A short escaped preview: ``"Hello\\n"`` or ``"abc..."`` when longer."""
    raw = bytes(data[:limit])
    text = "".join(chr(b) if 32 <= b < 127 and b not in (0x22, 0x5C) else _escape(b) for b in raw)
    return f'"{text}"' + ("..." if len(data) > limit else "")


def _escape(b: int) -> str:
    return {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\"}.get(b, f"\\x{b:02x}")


class TracePrinter:
    """Writes events to a stream, one line each, thread-safe, flushed at once.

    Colour is used when the stream is a terminal and ``NO_COLOR`` is unset
    (https://no-color.org).
    """

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self.stream = stream
        if colour is None:
            isatty = getattr(stream, "isatty", None)
            colour = bool(isatty and isatty()) and not os.environ.get("NO_COLOR")
        self.colour = colour
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __call__(self, event: TraceEvent) -> None:
        pid = os.getpid()
        # On Linux the main thread's native id is the process id.
        line = event.format(colour=self.colour, pid=pid if pid != self._pid else None, main_tid=pid)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the trace never breaks the program it watches
