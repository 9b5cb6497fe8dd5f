"""Trace mode: every socket call of the library, printed as it happens.

``with tracing(sys.stderr): ...`` makes the library's seam
(``socketkit._sockets``) hand out ``TracedSocket`` objects, which print one
line per system call: socket, setsockopt, bind (with the port in host and
network byte order), listen, accept, connect, send/recv, sendto/recvfrom,
shutdown, close, each with its descriptor and outcome. The server loop
chooser (``server/_loop.py``) then picks the default asyncio loop: uvloop's
I/O happens in C where no Python object sees it. ``tests/trace`` checks the lines against
``strace``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from .. import _sockets
from ._events import SYSCALLS, TraceEvent, TracePrinter, preview
from ._socket import TracedSocket, set_sink

__all__ = [
    "SYSCALLS",
    "TraceEvent",
    "TracePrinter",
    "TracedSocket",
    "preview",
    "tracing",
]


@contextmanager
def tracing(
    stream: TextIO | None = None,
    *,
    sink: Callable[[TraceEvent], None] | None = None,
    colour: bool | None = None,
) -> Iterator[None]:
    """Trace the library's sockets inside the block.

    Args:
        stream: where to print lines (usually standard error).
        sink: receives each ``TraceEvent`` instead (tests, tools).
        colour: force colour on or off (default: on for a terminal).
    """
    if sink is None:
        if stream is None:
            raise ValueError("tracing() needs a stream or a sink")
        sink = TracePrinter(stream, colour=colour)
    old_sink = set_sink(sink)
    old_factory = _sockets.set_socket_factory(TracedSocket)
    try:
        yield
    finally:
        set_sink(old_sink)
        _sockets.set_socket_factory(old_factory)
