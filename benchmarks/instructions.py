"""User-space instructions per echoed request, counted by valgrind's callgrind.

Timed benchmarks on a shared 2-core machine are noisy; an instruction count is
not: the same server, load and binary give the same count whatever else the
machine does. This runs each server of the registry under
``valgrind --tool=callgrind`` with a fixed number of request rounds: after a
warm-up, callgrind's counters are dumped and zeroed (``callgrind_control --dump``), the counted rounds run, and the
second dump's total divided by the requests echoed is the figure. Start-up,
imports, connection set-up and shutdown stay out; what remains is the
server's own per-request cost (the kernel's work is not counted: callgrind
sees user space only).

Load: ``--conns`` connections (default 100), each sending one ``--size``-byte
request and waiting for its echo, ``rounds`` times, from a small client in
this process (its cost is not counted).

Run: ``python -m benchmarks.instructions --server socketkit --server uvloop``.
It needs valgrind (``apt-get install valgrind``) and takes a minute or two
per server: callgrind runs a program about fifty times slower.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.procs import ServerProcess
from benchmarks.registry import SERVERS, Context

#: Seconds the load may take under callgrind before the run is abandoned.
LOAD_TIMEOUT = 300.0
#: Rounds run before counting: first-call costs (caches, allocator growth) stay out.
WARMUP_ROUNDS = 20


def open_clients(port: int, conns: int) -> list[socket.socket]:
    clients = []
    try:
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", port), timeout=LOAD_TIMEOUT)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            clients.append(s)
    except BaseException:
        for s in clients:
            s.close()
        raise
    return clients


def echo_rounds(clients: list[socket.socket], rounds: int, size: int) -> int:
    """Each client sends ``size`` bytes and waits for the echo, ``rounds`` times."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    message = b"x" * size
    left = dict.fromkeys(clients, rounds)
    pending = dict.fromkeys(clients, size)
    done = 0
    with selectors.DefaultSelector() as sel:
        for s in clients:
            sel.register(s, selectors.EVENT_READ)
            s.send(message)
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the echo load did not finish in {LOAD_TIMEOUT:.0f} s")
            for key, _ in sel.select(5.0):
                s = key.fileobj  # type: ignore[assignment]
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("the server closed a connection during the load")
                pending[s] -= len(data)
                if pending[s] > 0:
                    continue
                pending[s] = size
                left[s] -= 1
                done += 1
                if left[s]:
                    s.send(message)
                else:
                    sel.unregister(s)
                    del left[s]
    return done


def _dump(pid: int, out: Path, n: int) -> int:
    """Have callgrind write its counters (and zero them); return the total."""
    subprocess.run(
        ["callgrind_control", "--dump", str(pid)], check=True, capture_output=True, timeout=60
    )
    dump = out.with_name(f"{out.name}.{n}")
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {dump}")


def per_request(
    name: str, ctx: Context, conns: int, size: int, rounds: int, keep: Path | None = None
) -> float:
    """Instructions per request of one server: counted between two dumps.

    With ``keep``, the counted dump is copied there as ``NAME.callgrind``
    (for ``callgrind_annotate``).
    """
    build = SERVERS[name].command("tcp")
    if build is None:
        raise ValueError(f"{name} has no TCP variant")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        with ServerProcess([*valgrind, *build(ctx)], None, ready_timeout=120) as server:
            clients = open_clients(server.port, conns)
            try:
                echo_rounds(clients, WARMUP_ROUNDS, size)
                _dump(server.proc.pid, out, 1)
                done = echo_rounds(clients, rounds, size)
                total = _dump(server.proc.pid, out, 2)
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(out.with_name(f"{out.name}.2"), keep / f"{name}.callgrind")
            finally:
                for s in clients:
                    s.close()
    return total / done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    p.add_argument(
        "--server",
        action="append",
        metavar="NAME",
        help="repeatable; default: socketkit and uvloop",
    )
    p.add_argument("--size", type=int, default=64, help="request size in bytes (default 64)")
    p.add_argument("--conns", type=int, default=100, help="connections (default 100)")
    p.add_argument("--rounds", type=int, default=100, help="counted rounds (default 100)")
    p.add_argument("--socketkit-args", default="", metavar="ARGS")
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep each counted profile in DIR (callgrind_annotate)",
    )
    args = p.parse_args(argv)
    if not shutil.which("valgrind"):
        p.error("valgrind is not installed (apt-get install valgrind)")
    names = args.server or ["socketkit", "uvloop"]
    for name in names:
        if name not in SERVERS:
            p.error(f"unknown server {name!r}; known: {', '.join(SERVERS)}")
    ctx = Context(python=sys.executable, socketkit_args=tuple(args.socketkit_args.split()))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    results: dict[str, float] = {}
    for name in names:
        results[name] = per_request(name, ctx, args.conns, args.size, args.rounds, args.keep)
        print(f"{name:12} {results[name]:8,.0f} instructions per {args.size} B request", flush=True)
    ref = results.get("uvloop")
    if ref:
        for name, value in results.items():
            print(f"{name:12} {value / ref:6.2f}x uvloop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
