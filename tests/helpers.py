"""Shared test helpers: run socketkit in-process or as a subprocess, wait on readiness.

Readiness is always a printed line (a server's listening line) read with a
deadline, never a sleep.
"""

from __future__ import annotations

import io
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from socketkit.cli import main

#: Seconds any single loopback step may take before a test fails.
LOOPBACK_TIMEOUT = 10.0


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


class Server:
    """A socketkit server subprocess whose output is read line by line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._out = b""
        self._err = b""
        self._sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        for stream in (proc.stdout, proc.stderr):
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
                    self._out += data
                else:
                    self._err += data
            elif data == b"":
                self._sel.unregister(key.fileobj)
        return True

    @property
    def out(self) -> str:
        return self._out.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self._err.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = LOOPBACK_TIMEOUT) -> re.Match[str]:
        """Wait until stdout matches ``pattern``; fail with the output so far."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.M)
        while True:
            match = regex.search(self.out)
            if match:
                return match
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.5)) and self.proc.poll() is not None):
                raise AssertionError(
                    f"no {pattern!r} within {timeout} s; rc={self.proc.poll()}\n"
                    f"stdout:\n{self.out}\nstderr:\n{self.err}"
                )

    def port(self) -> int:
        return int(self.wait_for(r"listening on port (\d+)").group(1))

    def wait(self, timeout: float = LOOPBACK_TIMEOUT) -> int:
        """Wait for exit, collecting all output; return the exit code."""
        deadline = time.monotonic() + timeout
        while self._pump(max(0.0, min(0.5, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                break
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = LOOPBACK_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(LOOPBACK_TIMEOUT)
        self._sel.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def start_server(*args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``socketkit ARGS`` as a subprocess; kill it (by PID) at the end."""
    proc = subprocess.Popen(
        socketkit_argv(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    server = Server(proc)
    try:
        yield server
    finally:
        server.close()
