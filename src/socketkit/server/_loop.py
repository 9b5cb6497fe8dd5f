"""Choosing the event loop: uvloop where it is installed, asyncio's own elsewhere.

uvloop (libuv) runs the same asyncio code several times faster on Linux and
macOS; it has no Windows wheels, where the default loop is used.
``SOCKETKIT_LOOP=asyncio`` forces the default loop (for comparisons).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._sockets import plain_sockets

__all__ = ["loop_name", "run"]

T = TypeVar("T")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop does its socket I/O in C, past any Python socket object: when the
    # seam hands out traced sockets, only the default loop shows their calls.
    if os.environ.get("SOCKETKIT_LOOP", "").lower() == "asyncio" or not plain_sockets():
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """Which loop ``run`` uses, with its version: ``uvloop 0.21.0`` or ``asyncio``."""
    if _uvloop_factory() is None:
        return "asyncio"
    import uvloop

    return f"uvloop {getattr(uvloop, '__version__', '?')}"


def run(
    main: Coroutine[Any, Any, T],
    *,
    on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None,
) -> T:
    """Run ``main`` on the best available loop and return its result.

    Args:
        on_loop: called with the loop before it starts (a signal handler
            that must hand work to it cannot ask ``get_running_loop``:
            uvloop names its running loop only after setting up signals).
    """
    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        if on_loop is not None:
            on_loop(runner.get_loop())
        return runner.run(main)
