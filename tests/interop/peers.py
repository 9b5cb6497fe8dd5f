"""Helpers for tests that run the socket-demo peers (peers/c, peers/java) as real processes.

Usage::

    from peers import Proc, c_cmd, java_cmd, run

    with Proc(c_cmd("tcp_server", "0")) as server:
        port = int(server.wait_for(r"Server listening on port (\\d+)").group(1))
        code, out, err = run(java_cmd("TCPClient", "127.0.0.1", str(port)))
        assert server.wait() == 0

Every process started by :class:`Proc` is terminated by its PID when the
``with`` block ends, and every pipe is closed (the test-suite turns
ResourceWarning into an error).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = REPO_ROOT / "peers"
C_BIN_DIR = PEERS_DIR / "c" / "bin"
JAVA_CLASSES_DIR = PEERS_DIR / "java" / "classes"

#: How long a peer may take to start, answer or exit (the JVM starts slowly).
PEER_DEADLINE = 20.0
#: How long a process gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 5.0

C_PROGRAMS = ("tcp_server", "tcp_client", "udp_server", "udp_client")
JAVA_PROGRAMS = ("TCPServer", "TCPClient", "UDPServer", "UDPClient")

#: The tools ``make -C peers`` needs, and what each is for.
# SIGKILL does not exist on Windows (where the peers do not run anyway).
_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)

REQUIRED_TOOLS = {
    "make": "make",
    "cc": "the C compiler",
    "javac": "the Java compiler",
    "java": "the Java runtime",
}


class PeerBuildError(RuntimeError):
    """The peers could not be built (a missing tool or a failed make)."""


_build_lock = threading.Lock()
_built = False


def missing_tools() -> list[str]:
    """The required tools that are not on PATH, described for an error message."""
    return [f"{tool} ({why})" for tool, why in REQUIRED_TOOLS.items() if shutil.which(tool) is None]


def build_peers() -> None:
    """Run ``make -C peers`` once per process; raise PeerBuildError if it cannot.

    Concurrent test processes (e.g. pytest-xdist workers) are serialised with
    a file lock so that two makes never write the same files at once.
    """
    global _built
    with _build_lock:
        if _built:
            return
        missing = missing_tools()
        if missing:
            raise PeerBuildError(
                "cannot build the socket-demo peers, missing: " + ", ".join(missing)
            )
        with _interprocess_lock():
            result = subprocess.run(
                ["make", "-C", str(PEERS_DIR)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise PeerBuildError(
                f"make -C {PEERS_DIR} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        _built = True


@contextlib.contextmanager
def _interprocess_lock() -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no concurrent builds to guard against here
        yield
        return
    lock_path = Path(tempfile.gettempdir()) / "socketkit-peers-build.lock"
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def c_cmd(program: str, *args: str) -> list[str]:
    """The command line running the C peer ``program`` with ``args``."""
    if program not in C_PROGRAMS:
        raise ValueError(f"unknown C peer {program!r}; expected one of {C_PROGRAMS}")
    return [str(C_BIN_DIR / program), *map(str, args)]


def java_cmd(program: str, *args: str) -> list[str]:
    """The command line running the Java peer ``program`` with ``args``."""
    if program not in JAVA_PROGRAMS:
        raise ValueError(f"unknown Java peer {program!r}; expected one of {JAVA_PROGRAMS}")
    return ["java", "-cp", str(JAVA_CLASSES_DIR), program, *map(str, args)]


def ipv6_loopback_available() -> bool:
    """Whether a socket can bind ``::1`` here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback (::1)")
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix-domain sockets")


def run(
    cmd: Sequence[str], timeout: float = PEER_DEADLINE, *, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a client to completion; return (exit code, stdout, stderr).

    If it does not finish within ``timeout`` seconds it is killed and an
    AssertionError carrying its output so far is raised.
    """
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{_show(cmd)} did not finish within {timeout} s\n"
            f"stdout: {_text(exc.stdout)!r}\nstderr: {_text(exc.stderr)!r}"
        ) from None
    return result.returncode, result.stdout, result.stderr


class Proc:
    """A long-running peer (usually a server) whose output is read line by line.

    Two reader threads collect stdout and stderr as they arrive, so
    :meth:`wait_for` can block on a regular expression with a deadline
    instead of polling. Use it as a context manager: on exit the process is
    terminated by its PID (SIGTERM, then SIGKILL after a grace period) if it
    is still running, and all pipes are closed.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self._cwd = cwd
        self._env = env
        self._popen: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._eof: dict[str, bool] = {"stdout": False, "stderr": False}
        self._cursor: dict[str, int] = {"stdout": 0, "stderr": 0}
        self._threads: list[threading.Thread] = []

    # -- life cycle -------------------------------------------------------------

    def start(self) -> Proc:
        if self._popen is not None:
            raise RuntimeError("already started")
        self._popen = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            cwd=self._cwd,
            env=self._env,
        )
        for name, stream in (("stdout", self._popen.stdout), ("stderr", self._popen.stderr)):
            thread = threading.Thread(
                target=self._reader,
                args=(name, stream),
                name=f"Proc-{name}-{self._popen.pid}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __enter__(self) -> Proc:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def wait(self, timeout: float = PEER_DEADLINE) -> int:
        """Wait for the process to exit on its own; return its exit code.

        Raises AssertionError (with the output so far) after ``timeout`` s.
        """
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{_show(self.cmd)} did not exit within {timeout} s\n{self._describe()}"
            ) from None
        self._join_readers()
        return code

    def stop(self) -> int:
        """Terminate the process by its PID if it still runs; return its exit code.

        Safe to call more than once. Closes the pipes and joins the readers.
        """
        process = self._process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(TERMINATE_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, _SIGKILL)
                process.wait()
        self._join_readers()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        return process.returncode

    # -- output -----------------------------------------------------------------

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = PEER_DEADLINE, stream: str = "stdout"
    ) -> re.Match[str]:
        """Wait for a line of ``stream`` matching ``pattern`` (re.search); return the match.

        Lines are consumed: the next call continues after the matching line.
        Raises AssertionError with the collected output if the deadline
        passes or the stream ends first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                lines = self._lines[stream]
                while self._cursor[stream] < len(lines):
                    line = lines[self._cursor[stream]]
                    self._cursor[stream] += 1
                    match = regex.search(line.rstrip("\n"))
                    if match:
                        return match
                if self._eof[stream]:
                    why = f"{stream} ended"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    why = f"no such line within {timeout} s"
                    break
                self._cond.wait(remaining)
        raise AssertionError(
            f"{_show(self.cmd)}: waiting for {regex.pattern!r} on {stream}: {why}\n"
            f"{self._describe()}"
        )

    @property
    def stdout(self) -> str:
        """Everything read from stdout so far (all of it once the process has exited)."""
        with self._cond:
            return "".join(self._lines["stdout"])

    @property
    def stderr(self) -> str:
        """Everything read from stderr so far (all of it once the process has exited)."""
        with self._cond:
            return "".join(self._lines["stderr"])

    # -- internals --------------------------------------------------------------

    @property
    def _process(self) -> subprocess.Popen[str]:
        if self._popen is None:
            raise RuntimeError("Proc not started")
        return self._popen

    def _reader(self, name: str, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            with self._cond:
                self._lines[name].append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof[name] = True
            self._cond.notify_all()

    def _join_readers(self) -> None:
        for thread in self._threads:
            thread.join(TERMINATE_GRACE)

    def _describe(self) -> str:
        return (
            f"pid {self._process.pid}, exit code {self._process.poll()}\n"
            f"stdout: {self.stdout!r}\nstderr: {self.stderr!r}"
        )


def _show(cmd: Sequence[str]) -> str:
    return " ".join(cmd)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data
