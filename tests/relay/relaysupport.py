"""Run socketkit connect/listen/relay (and the real tools) as subprocesses, with deadlines.

Readiness is the ``listening on port N`` line that ``-v`` prints on standard
error (or, for tools that print nothing, a connect retry loop with a
deadline); never a sleep.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

import helpers
from helpers import LOOPBACK_TIMEOUT, free_port, wait_connectable
from helpers import socketkit_argv as sk

__all__ = [
    "LOOPBACK_TIMEOUT",
    "Proc",
    "free_port",
    "need_tool",
    "recv_all",
    "run",
    "running",
    "sha",
    "sk",
    "wait_connectable",
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it from Debian packages)")
    return path


class Proc(helpers.Proc):
    """A relay-side process: output as bytes, readiness on standard error."""

    @property
    def out(self) -> bytes:
        return self.out_bytes

    @property
    def err(self) -> bytes:
        return self.err_bytes

    @property
    def err_text(self) -> str:
        return self._text("err")

    def wait_err(self, pattern: str, timeout: float = LOOPBACK_TIMEOUT) -> re.Match[str]:
        return self.search(pattern, "err", timeout)

    def wait_out(self, data: bytes, timeout: float = LOOPBACK_TIMEOUT) -> None:
        """Wait until standard output contains ``data``."""
        self.wait_until(
            lambda: True if data in self.out_bytes else None, f"no {data!r} on stdout", timeout
        )

    def port(self) -> int:
        return int(self.wait_err(r"listening (?:\w+ )?on port (\d+)").group(1))


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


def recv_all(sock: socket.socket, timeout: float = LOOPBACK_TIMEOUT) -> bytes:
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
