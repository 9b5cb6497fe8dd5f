"""Ctrl-C and SIGTERM at any moment of start-up and shutdown, for every command.

Each command is started many times and sent SIGINT or SIGTERM (alternately)
at a different moment, every ``STEP`` seconds over the first half second.
Whatever the moment: the command ends (no hang, no second signal needed),
with 0 (it stopped gracefully, or had finished), 130 (SIGINT) or 143
(SIGTERM); with at most one ``socketkit: error:`` line and never a
traceback or a warning; and nothing of it is left running (workers
included: each run is a process group of its own).

The moments start once socketkit's entry has installed its start-up guard:
a signal during Python's own start-up, before any socketkit code runs, is
the interpreter's to handle. On Linux that moment is read from the
process itself (``/proc/PID/status`` shows SIGTERM caught), so a loaded
machine does not shift it; elsewhere it is estimated as twice the time
``import socketkit.__main__`` takes with ``PARALLEL`` starts at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pytest

from helpers import LOOPBACK_TIMEOUT, socketkit_argv

pytestmark = [pytest.mark.fault, pytest.mark.timeout(300)]

#: Seconds between two signalling moments, and the span they cover.
STEP = 0.02
SPAN = 0.5
#: Runs at once (the machine's cores are shared with the rest of the suite).
PARALLEL = 4


@dataclass
class Outcome:
    delay: float
    sig: signal.Signals
    code: int | None
    err: str
    left_behind: bool


def _interpreter_start() -> float:
    """Seconds until socketkit's entry surely runs: twice the longest start of
    ``PARALLEL`` at once, the load the runs below put on the machine (``-m``
    and other work add to the measured time)."""

    def one_start(_: int) -> float:
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-c", "import socketkit.__main__"],
            check=True,
            timeout=LOOPBACK_TIMEOUT,
        )
        return time.monotonic() - started

    with ThreadPoolExecutor(PARALLEL) as pool:
        return 2 * max(pool.map(one_start, range(2 * PARALLEL)))


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # the poll interval, not a synchronisation


def _guard_installed(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` catches SIGTERM: socketkit's start-up guard is in place."""
    deadline = time.monotonic() + timeout
    mask = 1 << (signal.SIGTERM - 1)
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as status:
                caught = next(line for line in status if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return False  # gone already
        if int(caught.split()[1], 16) & mask:
            return True
        time.sleep(0.001)  # the poll interval of a readiness wait
    return False


#: Whether the start-up guard can be seen from outside (``_guard_installed``).
SEES_GUARD = sys.platform.startswith("linux")


def _run_once(argv: list[str], delay: float, sig: signal.Signals) -> Outcome:
    proc = subprocess.Popen(
        socketkit_argv(*argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        if SEES_GUARD:
            _guard_installed(proc.pid, LOOPBACK_TIMEOUT)
        time.sleep(delay)  # the moment under test, not a synchronisation
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=LOOPBACK_TIMEOUT)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code, err = None, b""
        gone = _group_gone(proc.pid, LOOPBACK_TIMEOUT if code is not None else 0)
        return Outcome(delay, sig, code, err.decode("utf-8", "replace"), not gone)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=LOOPBACK_TIMEOUT)


@contextmanager
def _silent_peers() -> Iterator[tuple[int, int]]:
    """A TCP listener that never answers and a UDP socket that never replies."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(128)
        udp.bind(("127.0.0.1", 0))
        yield tcp.getsockname()[1], udp.getsockname()[1]


def _commands(tcp: int, udp: int) -> dict[str, list[str]]:
    return {
        "tcp-server": ["tcp-server", "-p", "0"],
        "tcp-server --workers": ["tcp-server", "-p", "0", "--workers", "2"],
        "udp-server": ["udp-server", "-p", "0"],
        "tcp-client": ["tcp-client", "-p", str(tcp), "-w", "5"],
        "udp-client": ["udp-client", "-p", str(udp), "-w", "5"],
        "demo": ["demo"],
        "connect": ["connect", "-w", "5", "127.0.0.1", str(tcp)],
        "listen": ["listen", "-p", "0"],
        "nc -l": ["nc", "-l", "-p", "0"],
        "listen -k": ["listen", "-k", "-p", "0"],
        "listen --broker": ["listen", "--broker", "127.0.0.1", "0"],
        "listen -e": ["listen", "127.0.0.1", "0", "-e", "cat"],
        "nc -lu": ["nc", "-lu", "-p", "0"],
        "nc -luk -e": ["nc", "-luk", "-p", "0", "-e", "cat"],
        "bench server": ["bench", "server", "-p", "0"],
        "relay": ["relay", "tcp-listen:0", f"tcp:127.0.0.1:{tcp}"],
    }


ALLOWED = {signal.SIGINT: {0, 130}, signal.SIGTERM: {0, 143}}


def _problems(outcome: Outcome) -> list[str]:
    found = []
    if outcome.code is None:
        found.append("still running (hung)")
    elif outcome.code not in ALLOWED[outcome.sig]:
        found.append(f"exit {outcome.code}")
    if "Traceback" in outcome.err or "Warning" in outcome.err:
        found.append("traceback or warning")
    errors = [line for line in outcome.err.splitlines() if line.startswith("socketkit: error:")]
    if len(errors) > 1 or (outcome.code in (130, 143) and len(errors) != 1):
        found.append(f"{len(errors)} error lines")
    if outcome.left_behind:
        found.append("processes left behind")
    return found


@pytest.mark.parametrize(
    "name",
    list(_commands(0, 0)),
)
def test_a_signal_at_any_moment(name: str) -> None:
    start = 0.0 if SEES_GUARD else _interpreter_start()
    with _silent_peers() as (tcp, udp):
        argv = _commands(tcp, udp)[name]
        moments = [start + i * STEP for i in range(int(SPAN / STEP))]
        jobs = [
            (argv, delay, signal.SIGINT if i % 2 == 0 else signal.SIGTERM)
            for i, delay in enumerate(moments)
        ]
        with ThreadPoolExecutor(PARALLEL) as pool:
            outcomes = list(pool.map(lambda job: _run_once(*job), jobs))
    failures = [
        f"{o.sig.name} at {o.delay * 1000:.0f} ms: {', '.join(p)}\n{o.err[-600:]}"
        for o in outcomes
        if (p := _problems(o))
    ]
    assert not failures, f"{name}:\n" + "\n".join(failures)
