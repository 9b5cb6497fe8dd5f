"""Helpers for the loopback I/O tests: timeouts, descriptor counts, an asyncio
loop in a thread, and one blocking face for both connection flavours.

The conformance suite is written once against the blocking ``Connection``
API. An ``aio.Connection`` is driven through ``AioFacade``, which runs each
coroutine on an event loop owned by a background thread (``AioRunner``), so
the same test body exercises both layers, and two facades can be used from
two test threads at once (a writer and a reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from helpers import LOOPBACK_TIMEOUT

#: Seconds given to calls that are expected to time out.
SHORT_TIMEOUT = 0.2
#: How much later than asked an expected timeout may fire on a loaded machine.
TIMEOUT_SLACK = 2.0

T = TypeVar("T")


def open_fds() -> int | None:
    """How many descriptors this process has open; None where we cannot tell."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def unix_sockets_available() -> bool:
    return hasattr(socket, "AF_UNIX")


@contextlib.contextmanager
def short_socket_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for Unix socket files: ``tmp_path`` when short enough.

    A sockaddr_un path holds at most 107 bytes on Linux (103 on macOS), and
    pytest's ``tmp_path`` for a long parametrized test name can exceed that.
    """
    if len(str(tmp_path)) <= 80:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="sk-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sock_of(conn: Any) -> socket.socket:
    """The socket under a sync connection or an ``AioFacade``."""
    if isinstance(conn, AioFacade):
        sock = conn.wrapped.writer.get_extra_info("socket")
        assert sock is not None
        return sock  # type: ignore[no-any-return]
    return conn.socket  # type: ignore[no-any-return]


class Background:
    """Run ``fn`` in a thread; ``result()`` joins it and re-raises its error."""

    def __init__(self, fn: Callable[[], T], name: str = "background") -> None:
        self._fn = fn
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:
            self._error = exc

    def result(self, timeout: float = LOOPBACK_TIMEOUT) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"background thread still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result


class AioRunner:
    """An event loop running in its own thread until ``close()``."""

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = loop_factory()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="aio-runner", daemon=True)
        self._thread.start()
        if not self._ready.wait(LOOPBACK_TIMEOUT):
            raise AssertionError("event loop thread did not start")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 2 * LOOPBACK_TIMEOUT) -> T:
        """Run ``coro`` on the loop and wait for its result in this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _finish_tasks(self) -> None:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            _done, pending = await asyncio.wait(others, timeout=LOOPBACK_TIMEOUT)
            for task in pending:
                task.cancel()
            assert not pending, f"tasks still running at teardown: {pending}"

    def close(self) -> None:
        """Wait for the loop's tasks to finish, then stop and close the loop."""
        try:
            self.run(self._finish_tasks())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(LOOPBACK_TIMEOUT)
            assert not self._thread.is_alive(), "event loop thread did not stop"


class AioFacade:
    """A blocking face for an ``aio.Connection``: every coroutine method is run
    on the runner's loop; ``close`` is ``aclose``; ``with`` is ``async with``."""

    def __init__(self, conn: Any, runner: AioRunner) -> None:
        self.wrapped = conn
        self.runner = runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.wrapped, name)
        if inspect.iscoroutinefunction(attr):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self.runner.run(attr(*args, **kwargs))

            return call
        return attr

    @property
    def timeout(self) -> float | None:
        return self.wrapped.timeout  # type: ignore[no-any-return]

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.wrapped.timeout = value

    def close(self) -> None:
        self.runner.run(self.wrapped.aclose())

    def __enter__(self) -> AioFacade:
        entered = self.runner.run(self.wrapped.__aenter__())
        assert entered is self.wrapped
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.runner.run(self.wrapped.__aexit__(exc_type, exc, tb))
