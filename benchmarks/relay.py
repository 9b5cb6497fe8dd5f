"""Relay throughput: socketkit relay vs socat (default and -b 65536) vs ncat, in one run.

Path: load generator (``bulk``: 1 GiB written and read back concurrently on one
connection) -> relay under test -> C epoll echo server, so the relay carries
1 GiB each way. The load generator and the echo server share one core, the
relay gets the other (pinned with taskset when there are two or more CPUs;
with three or more the echo server gets a third). The ``direct`` row is the
same load with no relay at all: the ceiling on this machine.

Contenders (:data:`RELAYS`; name -> (listen port, target port) -> argv):

* ``socketkit``           ``socketkit relay tcp-listen:P,fork tcp:127.0.0.1:Q`` (the default
                          path: 256 KiB user-space buffers)
* ``socketkit-splice``    the same with ``--splice`` (splice(2) through a pipe, Linux)
* ``socat``               ``socat TCP-LISTEN:P,reuseaddr,fork TCP:127.0.0.1:Q``
* ``socat-b64k``          the same with ``-b 65536``
* ``ncat``                ``ncat -l -k 127.0.0.1 P --sh-exec 'ncat 127.0.0.1 Q'``

socat and ncat cannot announce a port chosen by the OS, so every relay gets a
free port picked here and is ready when a connect succeeds (a retry loop with
a deadline). Every process is started in its own session and ended by its
process-group id (``procs.end_process``).

Also measured: the relay's peak resident memory (VmHWM, whole process group).
Ratios are taken against ``socat-b64k`` (and ``socat``) and written in the
note column.

Run: ``python -m benchmarks.relay`` (``--quick`` for 64 MiB, ``--runs N``); or,
once the runner dispatches ``kind == "relay"`` to :func:`bench_relays`,
``python -m benchmarks --scenario relay``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.procs import (
    ServerProcess,
    Unavailable,
    child_env,
    end_process,
    group_status_kib,
    pinned,
    run_loadgen,
)
from benchmarks.registry import BIN_DIR, GiB, MiB, Scenario

RELAY_SCENARIOS: list[Scenario] = [
    Scenario(
        "relay-bulk-1g",
        "relay",
        "tcp",
        "1 GiB each way through the relay to the C echo server, one connection",
        {"bytes": GiB},
        {"bytes": 64 * MiB},
        metric="MiB_per_s",
        unit="MiB/s",
    ),
]


def _socketkit(*extra: str) -> Callable[[int, int], list[str]]:
    def build(listen: int, target: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "socketkit",
            "relay",
            *extra,
            f"tcp-listen:127.0.0.1:{listen},fork",
            f"tcp:127.0.0.1:{target}",
        ]

    return build


# relay name -> (listen_port, target_port) -> command line
RELAYS: dict[str, Callable[[int, int], list[str]]] = {
    "direct": lambda _listen, _target: [],
    "socketkit": _socketkit(),
    "socketkit-splice": _socketkit("--splice"),
    "socat": lambda listen, target: [
        "socat",
        f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork",
        f"TCP:127.0.0.1:{target}",
    ],
    "socat-b64k": lambda listen, target: [
        "socat",
        "-b",
        "65536",
        f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork",
        f"TCP:127.0.0.1:{target}",
    ],
    "ncat": lambda listen, target: [
        "ncat",
        "-l",
        "-k",
        "127.0.0.1",
        str(listen),
        "--sh-exec",
        f"exec ncat 127.0.0.1 {target}",
    ],
}
REFERENCES = ("socat-b64k", "socat")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_connectable(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if proc.poll() is not None:
            raise Unavailable(f"relay exited with status {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise Unavailable(f"relay not accepting on port {port} within {timeout:.0f} s")
        time.sleep(0.02)


def run_relay(
    scenario: Scenario,
    relay_name: str,
    *,
    quick: bool = False,
    relay_cpu: int | None = None,
    loadgen_cpu: int | None = None,
    echo_cpu: int | None = None,
) -> dict[str, Any]:
    """One run: echo server, relay, load generator; the load generator's JSON plus the relay's RSS."""
    params = scenario.effective(quick)
    with ServerProcess([str(BIN_DIR / "echo_server"), "--tcp", "0"], echo_cpu) as echo:
        argv = RELAYS[relay_name](0, 0)
        if not argv:
            port, proc = echo.port, None
        else:
            port = _free_port()
            argv = RELAYS[relay_name](port, echo.port)
            if shutil.which(argv[0]) is None:
                raise Unavailable(f"{argv[0]} is not installed")
            proc = subprocess.Popen(
                pinned(argv, relay_cpu),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,
            )
        try:
            if proc is not None:
                _wait_connectable(port, proc)
            cmd = [str(BIN_DIR / "loadgen"), "bulk", "--port", str(port)]
            cmd += ["--bytes", str(params["bytes"])]
            result = run_loadgen(cmd, loadgen_cpu, timeout=900)
            if proc is not None:
                result["relay_peak_rss_kib"] = group_status_kib(proc.pid, "VmHWM")
                result["relay_command"] = " ".join(argv)
        finally:
            if proc is not None:
                end_process(proc)
    if result.get("error") or result.get("verify_failures") or result.get("errors"):
        raise RuntimeError(f"load generator saw errors: {result}")
    return result


def bench_relays(
    scenario: Scenario,
    *,
    runs: int,
    quick: bool = False,
    relay_cpu: int | None = None,
    loadgen_cpu: int | None = None,
    names: list[str] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, dict[str, Any]]:
    """Every relay, ``runs`` times, interleaved (run 1 of each, then run 2, ...) so that
    a noisy machine affects them alike; entries shaped like the runner's."""
    cpus = sorted(os.sched_getaffinity(0))
    echo_cpu = cpus[2] if len(cpus) > 2 and relay_cpu is not None else loadgen_cpu
    names = names or list(RELAYS)
    entries: dict[str, dict[str, Any]] = {
        n: {"server": n, "label": n, "runs": [], "failures": []} for n in names
    }
    for i in range(1, runs + 1):
        for name in names:
            entry = entries[name]
            if entry.get("status") == "unavailable":
                continue
            tag = f"[{scenario.name}] {name} run {i}/{runs}"
            try:
                result = run_relay(
                    scenario,
                    name,
                    quick=quick,
                    relay_cpu=relay_cpu,
                    loadgen_cpu=loadgen_cpu,
                    echo_cpu=echo_cpu,
                )
            except Unavailable as exc:
                entry.update(status="unavailable", reason=str(exc))
                log(f"{tag}: unavailable ({exc})")
                continue
            except Exception as exc:
                entry["failures"].append(str(exc))
                log(f"{tag}: FAILED ({exc})")
                continue
            entry["runs"].append(result)
            log(f"{tag}: {result['MiB_per_s']:.0f} MiB/s")
    for entry in entries.values():
        values = [float(r["MiB_per_s"]) for r in entry["runs"]]
        if entry.get("status") == "unavailable":
            continue
        if not values:
            entry.update(status="failed", reason=(entry["failures"] or ["no runs"])[0])
            continue
        entry.update(status="ok", median=statistics.median(values), values=values)
        rss = [r["relay_peak_rss_kib"] for r in entry["runs"] if "relay_peak_rss_kib" in r]
        if rss:
            entry["relay_peak_rss_kib"] = max(rss)
    notes = []
    for ref in REFERENCES:
        ref_entry = entries.get(ref, {})
        if ref_entry.get("status") == "ok":
            for entry in entries.values():
                if entry.get("status") == "ok":
                    entry[f"vs_{ref}"] = entry["median"] / ref_entry["median"]
            notes.append(ref)
    for entry in entries.values():
        if entry.get("status") == "ok":
            parts = [f"{entry[f'vs_{r}']:.2f}x {r}" for r in notes]
            if "relay_peak_rss_kib" in entry:
                parts.append(f"peak RSS {entry['relay_peak_rss_kib'] / 1024:.0f} MiB")
            entry["reason"] = ", ".join(parts)
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__)
    p.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB, 1 run")
    p.add_argument("--runs", type=int, help="runs per relay (default 3; quick 1)")
    p.add_argument("--relay", action="append", choices=list(RELAYS), help="relays to run")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    subprocess.run(["make", "-C", str(BIN_DIR.parent / "c")], capture_output=True, check=False)
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpu = loadgen_cpu = None
    if not args.no_pin and shutil.which("taskset") and len(cpus) >= 2:
        loadgen_cpu, relay_cpu = cpus[0], cpus[1]
    sc = RELAY_SCENARIOS[0]
    runs = args.runs or (1 if args.quick else 3)
    entries = bench_relays(
        sc,
        runs=runs,
        quick=args.quick,
        relay_cpu=relay_cpu,
        loadgen_cpu=loadgen_cpu,
        names=args.relay,
    )
    size = sc.effective(args.quick)["bytes"] // MiB
    print(f"relay throughput: {size} MiB each way, median of {runs} run(s)")
    print(f"{'relay':20} {'MiB/s':>8} {'runs':>22}  note")
    for name, e in entries.items():
        if e.get("status") == "ok":
            vals = "/".join(f"{v:.0f}" for v in e["values"])
            print(f"{name:20} {e['median']:8.0f} {vals:>22}  {e.get('reason', '')}")
        else:
            print(f"{name:20} {e.get('status', '?'):>8} {'':>22}  {e.get('reason', '')}")
    if args.json:
        args.json.write_text(json.dumps({"scenario": sc.name, "results": entries}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
