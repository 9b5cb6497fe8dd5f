"""Shared test helpers: run socketkit in-process or as a subprocess, wait on readiness.

Readiness is always a printed line (a server's listening line) read with a
deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self, TypeVar

from socketkit.cli import main

#: Seconds any single loopback step may take before a test fails.
LOOPBACK_TIMEOUT = 10.0

T = TypeVar("T")


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> Result:
    """Run ``socketkit ARGV`` in-process with captured streams."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def socketkit_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "socketkit", *args]


class Proc:
    """A subprocess whose stdout and stderr are collected without blocking.

    The bytes read so far are in ``out_bytes`` and ``err_bytes``; waits poll
    the pipes with a deadline and fail with everything the process printed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        # A session of its own: at close, the whole process group goes, so
        # children (workers, a traced program under strace) cannot outlive it.
        self.proc = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.out_bytes = b""
        self.err_bytes = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self._sel.register(stream, selectors.EVENT_READ)

    def _pump(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False when both pipes ended."""
        if not self._sel.get_map():
            return False
        for key, _ in self._sel.select(timeout):
            data = key.fileobj.read()  # type: ignore[union-attr]
            if data:
                if key.fileobj is self.proc.stdout:
                    self.out_bytes += data
                else:
                    self.err_bytes += data
            elif data == b"":
                self._sel.unregister(key.fileobj)
        return True

    def _text(self, stream: str) -> str:
        return (self.out_bytes if stream == "out" else self.err_bytes).decode("utf-8", "replace")

    def wait_until(self, check: Callable[[], T | None], what: str, timeout: float) -> T:
        """Read output until ``check()`` returns something; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.5)) and self.proc.poll() is not None):
                raise AssertionError(
                    f"{what} within {timeout} s; rc={self.proc.poll()}\n"
                    f"stdout:\n{self._text('out')}\nstderr:\n{self._text('err')}"
                )

    def search(
        self, pattern: str, stream: str = "out", timeout: float = LOOPBACK_TIMEOUT
    ) -> re.Match[str]:
        """Wait until standard output (or ``stream="err"``) matches ``pattern``."""
        regex = re.compile(pattern, re.M)
        return self.wait_until(
            lambda: regex.search(self._text(stream)), f"no {pattern!r} on std{stream}", timeout
        )

    def wait(self, timeout: float = LOOPBACK_TIMEOUT) -> int:
        """Wait for exit, collecting all output; return the exit code."""
        deadline = time.monotonic() + timeout
        while self._pump(max(0.0, min(0.5, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.argv} still running after {timeout} s")
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = LOOPBACK_TIMEOUT) -> int:
        """Send ``sig`` (by PID) and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the process group it leads, if anything in it still runs, and close the pipes."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(LOOPBACK_TIMEOUT)
        self._sel.close()
        for stream in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if stream is not None:
                stream.close()


class Server(Proc):
    """A socketkit server: its output as text, ready when its listening line shows."""

    @property
    def out(self) -> str:
        return self._text("out")

    @property
    def err(self) -> str:
        return self._text("err")

    def wait_for(self, pattern: str, timeout: float = LOOPBACK_TIMEOUT) -> re.Match[str]:
        """Wait until stdout matches ``pattern``; fail with the output so far."""
        return self.search(pattern, "out", timeout)

    def port(self) -> int:
        return int(self.wait_for(r"listening on port (\d+)").group(1))


def free_port() -> int:
    """A port nobody listens on right now, for tools that cannot announce theirs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_connectable(port: int, timeout: float = LOOPBACK_TIMEOUT) -> None:
    """Retry connecting until something listens on ``port`` (a deadline, no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nothing listening on port {port} within {timeout} s"
                ) from None
            time.sleep(0.02)  # the retry interval of a connect loop, not a synchronisation


@contextmanager
def start_server(*args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``socketkit ARGS`` as a subprocess; kill it (by PID) at the end."""
    server = Server(socketkit_argv(*args), env={**os.environ, **(env or {})})
    try:
        yield server
    finally:
        server.close()


@contextmanager
def echo_target() -> Iterator[int]:
    """An echo server on 127.0.0.1 (one thread per connection); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(LOOPBACK_TIMEOUT)
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(LOOPBACK_TIMEOUT)
