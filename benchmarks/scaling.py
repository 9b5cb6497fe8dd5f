"""Multi-core scaling: ``tcp-server --workers N`` under M load generator processes.

Each row is one layout: N worker processes (SO_REUSEPORT, one port) pinned to
a set of cores, and M copies of the C load generator (``echo`` mode, the
connections split evenly between them) pinned to another set. The figure is
the sum of the load generators' req/s; ``per server core`` divides it by the
cores the workers were given, and the note gives the ratio to the one-worker
row of the same layout family.

Layout families, chosen from the CPUs this process may use (``sched_getaffinity``):

* ``apart``: the load generators get ``L = max(1, cpus // 2)`` cores of their
  own and the workers 1, 2, ... up to the other ``cpus - L`` cores. This is
  the scaling measurement proper: it needs at least 3 cores to show more than
  one worker.
* ``shared``: 1 worker, then one worker per core, with as many load
  generators, all on every core. Workers and load generators compete for the
  same cores, so this shows what a second worker buys when the machine is
  also busy with the clients, not how the engine scales; on a 2-core machine
  it is the only two-worker figure there is, labelled as such.

Run: ``python -m benchmarks --scenario scale`` (``--quick``: 1 s runs), or
``python -m benchmarks.scaling``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.procs import ServerProcess, Unavailable, raise_nofile_limit, run_loadgen
from benchmarks.registry import BIN_DIR, SERVERS, Context, Scenario

SCALE_SCENARIOS: list[Scenario] = [
    Scenario(
        "scale-echo64-c1000",
        "scale",
        "tcp",
        "64 B echo, 1000 connections split over M load generators, tcp-server --workers N",
        {"conns": 1000, "size": 64, "depth": 1},
        {"conns": 200},
    ),
]


@dataclass(frozen=True)
class Layout:
    family: str  # apart | shared
    workers: int
    loadgens: int
    server_cpus: tuple[int, ...]
    loadgen_cpus: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.family} w{self.workers} x lg{self.loadgens}"

    def describe(self) -> str:
        return (
            f"{self.workers} worker(s) on CPU {_cpulist(self.server_cpus)}, "
            f"{self.loadgens} load generator(s) on CPU {_cpulist(self.loadgen_cpus)}"
        )


def _cpulist(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def layouts(cpus: list[int]) -> list[Layout]:
    """The rows to measure on these CPUs (see the module docstring)."""
    out = []
    n_lg = max(1, len(cpus) // 2)
    lg_cpus, srv_cpus = tuple(cpus[:n_lg]), tuple(cpus[n_lg:])
    for n in range(1, len(srv_cpus) + 1):
        out.append(Layout("apart", n, n_lg, srv_cpus[:n], lg_cpus))
    every = tuple(cpus)
    for n in sorted({1, len(cpus)}):
        out.append(Layout("shared", n, max(n, 1), every, every))
    return out


def _socketkit(python: str, workers: int, extra: tuple[str, ...]) -> list[str]:
    """The registry's socketkit echo server, with ``--workers``."""
    build = SERVERS["socketkit"].command("tcp")
    assert build is not None
    return [*build(Context(python=python, socketkit_args=extra)), "--workers", str(workers)]


def _loadgen(port: int, params: dict[str, Any]) -> list[str]:
    cmd = [str(BIN_DIR / "loadgen"), "echo", "--port", str(port)]
    for key, value in params.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def run_layout(
    layout: Layout,
    params: dict[str, Any],
    *,
    duration: float,
    warmup: float,
    python: str,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One measurement of one layout: the summed rate and each load generator's."""
    conns = int(params["conns"])
    per = [conns // layout.loadgens + (i < conns % layout.loadgens) for i in range(layout.loadgens)]
    cmd = _socketkit(python, layout.workers, extra)
    with ServerProcess(cmd, _cpulist(layout.server_cpus)) as server:
        jobs = [
            _loadgen(server.port, {**params, "conns": n, "duration": duration, "warmup": warmup})
            for n in per
        ]
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            results = list(
                pool.map(
                    lambda c: run_loadgen(c, _cpulist(layout.loadgen_cpus), duration + warmup + 90),
                    jobs,
                )
            )
        if not server.alive():
            raise RuntimeError(f"server exited during the run: {server.exit_reason()}")
    for r in results:
        if r.get("error") or r.get("verify_failures") or r.get("connect_failures"):
            raise RuntimeError(f"load generator reported a failure: {r}")
    total = sum(float(r["req_per_s"]) for r in results)
    return {
        "req_per_s": total,
        "per_server_core": total / len(layout.server_cpus),
        "loadgens": [float(r["req_per_s"]) for r in results],
    }


def bench_scaling(
    sc: Scenario,
    *,
    runs: int,
    quick: bool,
    duration: float,
    warmup: float,
    python: str,
    extra: tuple[str, ...] = (),
    cpus: list[int] | None = None,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Every layout, runs interleaved; entries shaped like the runner's."""
    cpus = cpus or sorted(os.sched_getaffinity(0))
    params = sc.effective(quick)
    rows = layouts(cpus)
    entries: dict[str, dict[str, Any]] = {
        lay.name: {"server": lay.name, "label": lay.describe(), "runs": [], "failures": []}
        for lay in rows
    }
    for i in range(1, runs + 1):
        for lay in rows:
            entry = entries[lay.name]
            try:
                result = run_layout(
                    lay, params, duration=duration, warmup=warmup, python=python, extra=extra
                )
            except (Unavailable, RuntimeError) as exc:
                entry["failures"].append(str(exc))
                log(f"[{sc.name}] {lay.name} run {i}/{runs}: FAILED ({exc})")
                continue
            entry["runs"].append(result)
            log(f"[{sc.name}] {lay.name} run {i}/{runs}: {result['req_per_s']:,.0f} req/s")
    for lay in rows:
        entry = entries[lay.name]
        values = [r["req_per_s"] for r in entry["runs"]]
        if not values:
            entry.update(status="failed", reason=(entry["failures"] or ["no runs"])[0])
            continue
        per_core = statistics.median(r["per_server_core"] for r in entry["runs"])
        entry.update(status="ok", median=statistics.median(values), values=values)
        entry["per_server_core"] = per_core
    for lay in rows:
        entry = entries[lay.name]
        base = entries.get(f"{lay.family} w1 x lg{1 if lay.family == 'shared' else lay.loadgens}")
        notes = [lay.describe(), f"{entry.get('per_server_core', 0):,.0f} req/s per server core"]
        if entry.get("status") == "ok" and base and base.get("status") == "ok":
            notes.append(f"{entry['median'] / base['median']:.2f}x one worker")
        if lay.family == "shared":
            notes.append("workers and clients share the cores")
        entry["reason"] = "; ".join(notes)
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 run of 1 s with 200 connections")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--duration", type=float, default=None)
    args = p.parse_args(argv)
    raise_nofile_limit()
    runs = args.runs or (1 if args.quick else 3)
    duration = args.duration or (1.0 if args.quick else 5.0)
    for sc in SCALE_SCENARIOS:
        entries = bench_scaling(
            sc,
            runs=runs,
            quick=args.quick,
            duration=duration,
            warmup=0.25 if args.quick else 1.0,
            python=sys.executable,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
        for name, e in entries.items():
            figure = f"{e['median']:>10,.0f} req/s" if e.get("status") == "ok" else "FAILED"
            print(f"{sc.name}  {name:18} {figure}  {e.get('reason', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
