"""Run socketkit servers and the relay as users do, and measure them from /proc.

The processes write their output to files (not pipes) so that a server
logging thousands of ``-v`` lines never blocks on a pipe nobody reads.
Readiness is the listening line, found by polling the file with a deadline;
every wait here is a condition polled with a deadline, never a sleep used as
synchronisation.

Figures each check measures are printed (``pytest -s``) and written to
``tests/fault/results/<check>.json`` (gitignored) for the closing report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from helpers import LOOPBACK_TIMEOUT, socketkit_argv

RESULTS = Path(__file__).resolve().parent / "results"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(
    condition: Callable[[], object], timeout: float = LOOPBACK_TIMEOUT, what: str = "condition"
) -> object:
    """Poll ``condition`` until it is truthy or ``timeout`` passes (then fail)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {value!r})")
        time.sleep(delay)  # polling interval of a condition with a deadline
        delay = min(delay * 2, 0.1)


def record(check: str, **figures: object) -> None:
    """Print a check's measured figures and keep them as JSON for the report."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{check}.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")
    print(f"\n[fault] {check}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


class Proc:
    """A socketkit subprocess whose stdout/stderr go to files; measured from /proc."""

    def __init__(self, argv: Sequence[str], workdir: Path, nofile: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path = workdir / "stdout"
        self.err_path = workdir / "stderr"
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            socketkit_argv(*argv),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            preexec_fn=limit if nofile is not None else None,
        )
        self.pid = self.proc.pid
        self.exit_seconds: float | None = None

    @property
    def out(self) -> str:
        return self.out_path.read_text("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text("utf-8", "replace")

    def wait_for(
        self, pattern: str, timeout: float = LOOPBACK_TIMEOUT, stream: str = "both"
    ) -> str:
        regex = re.compile(pattern, re.M)

        def found() -> re.Match[str] | None:
            text = {"out": self.out, "err": self.err}.get(stream, self.out + self.err)
            match = regex.search(text)
            if match is None and self.proc.poll() is not None:
                raise AssertionError(
                    f"exited (rc {self.proc.returncode}) before {pattern!r}\n"
                    f"stdout:\n{self.out}\nstderr:\n{self.err}"
                )
            return match

        match = wait_until(found, timeout, f"{pattern!r} in the output")
        assert isinstance(match, re.Match)
        return match.group(1) if match.groups() else match.group(0)

    def port(self) -> int:
        return int(self.wait_for(r"listening on port (\d+)"))

    # /proc measurements -------------------------------------------------------

    def status_kib(self, field: str) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match, field
        return int(match.group(1))

    def rss_kib(self) -> int:
        return self.status_kib("VmRSS")

    def hwm_kib(self) -> int:
        return self.status_kib("VmHWM")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def sockets(self) -> int:
        count = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith("socket:")
        return count

    def baseline_fds(self, port: int) -> int:
        """The descriptor count at rest after one exchange came and went.

        The first exchange makes the loop open a descriptor it keeps for good
        (libuv holds one on /dev/null), so the baseline is taken after it,
        once its socket is gone.
        """
        idle_sockets = self.sockets()
        with connect(port) as sock:
            sock.sendall(b"x\n")
            sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                read_until_eof(sock)
        wait_until(lambda: self.sockets() == idle_sockets, what="warm-up connection closed")
        return self.fds()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (/proc/PID/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    # ending ------------------------------------------------------------------

    def terminate(self, timeout: float = LOOPBACK_TIMEOUT) -> int:
        """SIGTERM, wait for exit; return the exit code (time kept in exit_seconds)."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.exit_seconds = time.monotonic() - start
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(LOOPBACK_TIMEOUT)
        self._out.close()
        self._err.close()

    def summary(self) -> dict[str, float]:
        """The ``summary:`` line the server prints at exit, as numbers."""
        match = re.search(r"^summary: (.*)$", self.err, re.M)
        assert match, f"no summary line in:\n{self.err}"
        result = {}
        for item in match.group(1).split(", "):
            key, value = item.rsplit(" ", 1)
            result[key] = float(value)
        return result

    def assert_clean_log(self) -> None:
        err = self.err
        assert "Traceback" not in err, err[-4000:]
        assert "internal error" not in err, err[-4000:]
        assert not re.search(r"^None: ", err, re.M), "a log line without its peer"


@contextmanager
def running(argv: Sequence[str], workdir: Path, nofile: int | None = None) -> Iterator[Proc]:
    """Start ``socketkit ARGV``; kill it (by PID) at the end whatever happened."""
    proc = Proc(argv, workdir, nofile)
    try:
        yield proc
    finally:
        proc.close()


@contextmanager
def tcp_server(
    workdir: Path, *args: str, nofile: int | None = None, quiet: bool = True
) -> Iterator[Proc]:
    """``socketkit tcp-server ARGS`` on a free loopback port, verbose (``-q``: no lecture lines)."""
    argv = ["tcp-server", "--host", "127.0.0.1", "-p", "0", "-v", *(["-q"] if quiet else []), *args]
    with running(argv, workdir, nofile) as proc:
        proc.port()
        yield proc


def connect(port: int, timeout: float = LOOPBACK_TIMEOUT) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout)
    sock.settimeout(timeout)
    return sock


def echo_roundtrip(
    port: int, payload: bytes = b"ping\n", timeout: float = LOOPBACK_TIMEOUT
) -> float:
    """One exchange with an echo server on a fresh connection; return its latency."""
    start = time.monotonic()
    with connect(port, timeout) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(got)} of {len(payload)} bytes"
            got += chunk
        assert got == payload
    return time.monotonic() - start


def read_until_eof(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    chunks = []
    total = 0
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        total += len(chunk)
        assert total <= limit
    return b"".join(chunks)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the peer closed (EOF or reset) within ``timeout``; drains what comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _echo_client(port: int, size: int, rng: random.Random) -> tuple[int, bool]:
    """Send ``size`` random bytes in random-sized writes while reading the echo."""
    payload = rng.randbytes(size)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        view = memoryview(payload)
        pos = 0
        while pos < size:
            n = rng.randint(1, 64 * 1024)
            writer.write(view[pos : pos + n])
            pos += n
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await reader.read(-1)  # until the server half-closes after the rest
    await sender
    writer.close()
    await writer.wait_closed()
    return len(received), sha(received) == sha(payload)


async def _echo_load(port: int, conns: int, size: int, seed: int) -> list[tuple[int, bool]]:
    rng = random.Random(seed)
    seeds = [rng.random() for _ in range(conns)]
    jobs = [_echo_client(port, size, random.Random(s)) for s in seeds]
    return await asyncio.wait_for(asyncio.gather(*jobs), 60)


def echo_load(port: int, conns: int, size: int, seed: int) -> list[tuple[int, bool]]:
    """``conns`` concurrent echo clients of ``size`` bytes each; (bytes back, hash matched) each."""
    return asyncio.run(_echo_load(port, conns, size, seed))


def slow_reader(proc: Proc, port: int, payload: bytes) -> tuple[int, int, float]:
    """Echo ``payload`` to a client reading at most 256 KiB per 20 ms; every byte must come back.

    ``proc``'s RSS is sampled before, then every tick, and a fresh client's
    round trip every tenth tick; returns (RSS before and at its peak in KiB,
    worst round trip in seconds).
    """
    size = len(payload)
    rss_before = rss_peak = proc.rss_kib()
    worst = 0.0
    slow = connect(port)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sender = threading.Thread(target=slow.sendall, args=(payload,), daemon=True)
    sender.start()
    got = bytearray()
    deadline = time.monotonic() + 60
    tick = 0
    while len(got) < size and time.monotonic() < deadline:
        want = 256 * 1024
        while want > 0:
            chunk = slow.recv(min(want, 65536))
            assert chunk, "the slow reader was closed"
            got += chunk
            want -= len(chunk)
        time.sleep(0.02)  # the slow reader's pace, not a synchronisation
        tick += 1
        rss_peak = max(rss_peak, proc.rss_kib())
        if tick % 10 == 0:
            worst = max(worst, echo_roundtrip(port))
    sender.join(LOOPBACK_TIMEOUT)
    slow.shutdown(socket.SHUT_WR)
    got += read_until_eof(slow)
    slow.close()
    assert bytes(got) == payload
    return rss_before, rss_peak, worst


def resets_mid_stream(port: int, count: int) -> None:
    """``count`` connections each with up to 256 KiB in flight, then a reset."""
    for _ in range(count):
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.send(os.urandom(256 * 1024))
        reset(s)


def half_close_echo(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and return everything read until EOF (read concurrently)."""
    with connect(port) as s:
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(read_until_eof(s)))
        reader.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reader.join(LOOPBACK_TIMEOUT)
        assert not reader.is_alive()
    return got[0]


def connect_and_close(port: int, count: int) -> None:
    """Connect and close ``count`` times, every other one with a reset."""
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT)
        if i % 2:
            reset(s)
        else:
            s.close()


def stalled_writer(
    proc: Proc, port: int, fds_before: int, limit: float
) -> tuple[int, float | None, float | None]:
    """Send to the echo behind ``port`` without ever reading, until ``proc`` lets go.

    The echo's writes back stall (our receive buffer is tiny and never read),
    so it stops reading us, and our sends stall too. Returns the bytes sent,
    when the writes stalled and when ``proc`` released the connection (its
    descriptors back to ``fds_before``, or the connection reset); None for
    what did not happen within ``limit`` seconds.
    """
    s = connect(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    chunk = b"z" * 65536
    sent = 0
    start = time.monotonic()
    stalled_at: float | None = None
    released: float | None = None
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_WRITE)
    while time.monotonic() - start < limit:
        if not sel.select(0.2):
            # Not writable for a while: the other end stopped reading (its writes stalled).
            stalled_at = stalled_at or time.monotonic()
            if proc.fds() == fds_before:
                released = time.monotonic()
                break
            continue
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            # Both socket buffers are full: the other end's writes are stalled.
            stalled_at = stalled_at or time.monotonic()
        except (BrokenPipeError, ConnectionResetError):
            released = time.monotonic()
            break
        if stalled_at is not None and proc.fds() == fds_before:
            released = time.monotonic()
            break
    sel.close()
    s.close()
    return sent, stalled_at, released
