"""Run socketkit connect/listen/relay (and the real tools) as subprocesses, with deadlines.

Readiness is the ``listening on port N`` line that ``-v`` prints on standard
error (or, for tools that print nothing, a connect retry loop with a
deadline); never a sleep.
"""

from __future__ import annotations

import hashlib
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

#: Seconds any single loopback step may take before a test fails.
LOOPBACK_TIMEOUT = 10.0


def sk(*args: str) -> list[str]:
    return [sys.executable, "-m", "socketkit", *args]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it from Debian packages)")
    return path


class Proc:
    """A subprocess whose stdout and stderr are collected without blocking."""

    def __init__(self, argv: Sequence[str], *, stdin: int | None = subprocess.DEVNULL) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.out = b""
        self.err = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self._sel.register(stream, selectors.EVENT_READ)

    def _pump(self, timeout: float) -> bool:
        if not self._sel.get_map():
            return False
        for key, _ in self._sel.select(timeout):
            data = key.fileobj.read()  # type: ignore[union-attr]
            if data:
                if key.fileobj is self.proc.stdout:
                    self.out += data
                else:
                    self.err += data
            else:
                self._sel.unregister(key.fileobj)
        return True

    @property
    def err_text(self) -> str:
        return self.err.decode("utf-8", "replace")

    def wait_err(self, pattern: str, timeout: float = LOOPBACK_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.M)
        while True:
            m = regex.search(self.err_text)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.5)) and self.proc.poll() is not None):
                raise AssertionError(
                    f"no {pattern!r} on stderr within {timeout} s; rc={self.proc.poll()}\n"
                    f"stderr:\n{self.err_text}"
                )

    def wait_out(self, data: bytes, timeout: float = LOOPBACK_TIMEOUT) -> None:
        """Wait until standard output contains ``data``."""
        deadline = time.monotonic() + timeout
        while data not in self.out:
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.5)) and self.proc.poll() is not None):
                raise AssertionError(f"no {data!r} on stdout; stderr:\n{self.err_text}")

    def port(self) -> int:
        return int(self.wait_err(r"listening (?:\w+ )?on port (\d+)").group(1))

    def wait(self, timeout: float = LOOPBACK_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self._pump(max(0.0, min(0.5, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.argv} still running after {timeout} s")
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(LOOPBACK_TIMEOUT)
        self._sel.close()
        for stream in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if stream is not None:
                stream.close()


@contextmanager
def running(argv: Sequence[str], *, stdin: int | None = subprocess.DEVNULL) -> Iterator[Proc]:
    """Start ``argv``; kill it (by PID) at the end whatever happened."""
    p = Proc(argv, stdin=stdin)
    try:
        yield p
    finally:
        p.close()


def run(
    argv: Sequence[str], data: bytes = b"", timeout: float = LOOPBACK_TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    """Run to completion with ``data`` on standard input."""
    return subprocess.run(list(argv), input=data, capture_output=True, timeout=timeout)


def free_port() -> int:
    """A port nobody listens on right now (for tools that cannot announce theirs)."""
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
            time.sleep(0.02)


def recv_all(sock: socket.socket, timeout: float = LOOPBACK_TIMEOUT) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
