"""Starting, watching and ending the processes of a benchmark run.

Every process is started in its own session (so its process group id is its
pid) and ended by that id in a ``finally``: SIGTERM, then SIGKILL after a grace
period.  Nothing here ever looks processes up by name.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from benchmarks.registry import REPO_ROOT

READY_RE = re.compile(rb"listening on port (\d+)", re.IGNORECASE)


class Unavailable(Exception):
    """The server could not be started (or died): the reason is the message."""


def raise_nofile_limit() -> int:
    """Raise this process's fd limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pinned(cmd: Sequence[str], cpu: int | str | None) -> list[str]:
    """``cmd`` run by taskset on ``cpu`` (a CPU number or a list such as ``0,1``)."""
    return ["taskset", "-c", str(cpu), *cmd] if cpu is not None else list(cmd)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tail(data: bytes, lines: int = 3) -> str:
    text = data.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def _exit_status_unreaped(pid: int, timeout: float = 0.0) -> int | None:
    """Wait up to ``timeout`` s for ``pid`` to exit, without reaping it (so its pid
    and process group id stay reserved); its exit status (-signal if killed), or None."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return 0
        if info is not None:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _exited_unreaped(pid: int, timeout: float) -> bool:
    return _exit_status_unreaped(pid, timeout) is not None


def end_process(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """End ``proc`` and its process group (it was started with start_new_session).

    SIGTERM first; after ``grace`` seconds, or as soon as the leader is gone,
    SIGKILL to the group so that no worker outlives the run.  The leader is
    reaped only after that, so the group id cannot have been reused.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        _exited_unreaped(proc.pid, grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


class ServerProcess:
    """A server under test: started, waited for, measured, ended."""

    def __init__(self, cmd: Sequence[str], cpu: int | str | None, ready_timeout: float = 20.0):
        self.cmd = list(cmd)
        self.port = 0
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._lines: collections.deque[bytes] = collections.deque(maxlen=20)
        self._ready = threading.Event()
        try:
            self.proc = subprocess.Popen(
                pinned(cmd, cpu),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=child_env(),
                start_new_session=True,
            )
        except OSError as exc:
            self._stderr.close()
            raise Unavailable(f"cannot start {cmd[0]}: {exc.strerror or exc}") from None
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.close()
            raise

    def _drain(self) -> None:
        """Read stdout for the readiness line, then keep draining it (the pipe must not fill)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            if not self._ready.is_set():
                m = READY_RE.search(line)
                if m:
                    self.port = int(m.group(1))
                    self._ready.set()
        self._ready.set()  # EOF: wake the waiter, which then sees the exit

    def _wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            raise Unavailable(f"no 'listening on port N' line within {timeout:.0f} s")
        if self.port == 0:
            code = _exit_status_unreaped(self.proc.pid, timeout=5)
            if code is None:
                raise Unavailable("closed its standard output without announcing a port")
            raise Unavailable(self.exit_reason(code))

    def exit_reason(self, code: int | None = None) -> str:
        if code is None:
            code = self.proc.returncode
        if code is None:
            code = _exit_status_unreaped(self.proc.pid)
        how = (
            f"killed by signal {-code}"
            if code is not None and code < 0
            else f"exited with status {code}"
        )
        detail = self.stderr_tail() or _tail(b"".join(self._lines))
        return f"{how}: {detail}" if detail else how

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return _tail(self._stderr.read()[-4096:])

    def alive(self) -> bool:
        return self.proc.returncode is None and not _exited_unreaped(self.proc.pid, 0)

    def rss_kib(self) -> int:
        """Resident memory of the server's whole process group (workers included)."""
        return group_rss_kib(self.proc.pid)

    def close(self) -> None:
        try:
            end_process(self.proc)
        finally:
            self._reader.join(timeout=2)
            self._stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _group_members(pgid: int) -> Iterator[tuple[Path, list[str]]]:
    """The /proc entry and the stat fields after the name (state ppid pgrp ...) of
    every live process in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
        except (OSError, ValueError, IndexError):
            continue
        yield entry, fields


def group_status_kib(pgid: int, field: str) -> int:
    """The sum of a /proc/PID/status kB field (VmRSS, VmHWM) over a process group."""
    total = 0
    for entry, _ in _group_members(pgid):
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total


def group_rss_kib(pgid: int) -> int:
    return group_status_kib(pgid, "VmRSS")


def settled_rss_kib(server: ServerProcess, limit: float = 3.0) -> int:
    """RSS once it stops moving (two samples 100 ms apart within 0.5 %), at most ``limit`` s."""
    prev = server.rss_kib()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.1)
        cur = server.rss_kib()
        if abs(cur - prev) <= max(8, prev // 200):
            return cur
        prev = cur
    return prev


def last_json(stdout: bytes) -> dict[str, Any]:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("ready "):
            line = line[len("ready ") :]
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result in the load generator's output")


def run_loadgen(cmd: Sequence[str], cpu: int | str | None, timeout: float) -> dict[str, Any]:
    """Run the load generator to completion and return its JSON result."""
    proc = subprocess.Popen(
        pinned(cmd, cpu),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"load generator did not finish within {timeout:.0f} s") from None
    finally:
        end_process(proc, grace=1.0)
    try:
        return last_json(out)
    except ValueError:
        raise RuntimeError(
            f"load generator failed (status {proc.returncode}): {_tail(err) or _tail(out)}"
        ) from None


class IdleClients:
    """The load generator in ``idle`` mode: hold N connections until closed."""

    def __init__(self, cmd: Sequence[str], cpu: int | None):
        self.proc = subprocess.Popen(
            pinned(cmd, cpu),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._first: list[bytes] = []
        self._got = threading.Event()
        threading.Thread(target=self._read_first, daemon=True).start()

    def _read_first(self) -> None:
        assert self.proc.stdout is not None
        self._first.append(self.proc.stdout.readline())
        self._got.set()

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        if not self._got.wait(timeout):
            raise RuntimeError(f"idle clients not ready within {timeout:.0f} s")
        line = self._first[0].decode("utf-8", "replace").strip()
        if not line.startswith("ready "):
            self.proc.wait(timeout=5)
            err = self.proc.stderr.read() if self.proc.stderr else b""
            raise RuntimeError(f"load generator failed: {_tail(err) or line or 'no output'}")
        return json.loads(line[len("ready ") :])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        end_process(self.proc, grace=1.0)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat (busy: all but idle and iowait)."""
    return {cpu: (busy, total) for cpu, (busy, total, _irq) in _proc_stat().items()}


def _proc_stat() -> dict[int, tuple[int, int, int]]:
    """Per-CPU (busy, total, irq+softirq) jiffies."""
    out: dict[int, tuple[int, int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            vals = [int(x) for x in fields]
            total = sum(vals[:8])  # guest time is already counted in user
            out[int(name[3:])] = (total - vals[3] - vals[4], total, vals[5] + vals[6])
    return out


def busy_pct(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpu: int | None
) -> float | None:
    if cpu is None or cpu not in before or cpu not in after:
        return None
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return round(100.0 * busy / total, 1) if total > 0 else None


def group_cpu_seconds(pgid: int) -> float:
    """user+system CPU seconds of the live processes of a process group."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in _group_members(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """How busy each core was during a run, and how much CPU *other* processes used.

    Others = all busy time on every core, less interrupt time, less what this
    driver, its reaped children (the load generator) and the server's process
    group used.  Other work on the machine (tests, builds) skews a benchmark; the
    report flags runs where it was noticeable.
    """

    def __init__(self, server_pgid: int):
        self.pgid = server_pgid
        self.t0 = self._snap()

    def _snap(self) -> tuple[dict[int, tuple[int, int, int]], float, float]:
        ru_self = resource.getrusage(resource.RUSAGE_SELF)
        ru_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime
        return _proc_stat(), ours + group_cpu_seconds(self.pgid), time.monotonic()

    def stop(self, server_cpu: int | None, loadgen_cpu: int | None) -> dict[str, float | None]:
        stat1, ours1, t1 = self._snap()
        stat0, ours0, t0 = self.t0
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(stat1[c][0] - stat0[c][0] for c in stat1 if c in stat0)
        irq = sum(stat1[c][2] - stat0[c][2] for c in stat1 if c in stat0)
        others = max(0.0, (busy - irq) / hz - (ours1 - ours0))
        before = {c: v[:2] for c, v in stat0.items()}
        after = {c: v[:2] for c, v in stat1.items()}
        return {
            "server_core": busy_pct(before, after, server_cpu),
            "loadgen_core": busy_pct(before, after, loadgen_cpu),
            # CPU used by unrelated processes, in % of one core.
            "others": round(100.0 * others / (t1 - t0), 1) if t1 > t0 else None,
        }
