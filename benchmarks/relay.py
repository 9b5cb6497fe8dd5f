"""Relays side by side: socketkit relay vs an asyncio+uvloop relay vs socat, in one run.

Path: load generator -> relay under test -> C epoll echo server. The relay gets
one core, the load generator and the echo server share the other (pinned with
taskset when there are two or more CPUs; with three or more the echo server
gets a third). The ``direct`` row is the same load with no relay at all: the
ceiling on this machine.

Scenarios (:data:`RELAY_SCENARIOS`, kind ``relay``; :data:`MODES` says how each
is measured):

* ``relay-echo64-c100``, ``relay-echo64-c1000``: 64 B echo through the relay,
  one request in flight per connection; req/s, and fairness: the note says
  how many connections completed no request while counting (must be none).
* ``relay-idle-5000``: 5000 relayed connections (10,000 sockets in the
  relay) that each echoed one byte and then sit idle; the relay's RSS
  growth per connection (whole process group, VmRSS), then one more echo on
  every connection, whose slowest round trip is in the note.
* ``relay-bulk-1g``: 1 GiB each way on one connection, written and read
  concurrently; MiB/s.
* ``relay-udp64``: 64 B datagrams through ``udp-listen:P,fork udp:...`` to
  the C UDP echo server (``echo_server --udp``), from 4 sockets with 16
  datagrams in flight each (``loadgen udp``); datagrams/s. The contenders
  are the C echo direct, socketkit and socat (``UDP-LISTEN:P,fork``): UDP
  has no connect to wait for, so a relay is ready once a probe datagram
  comes back.

Contenders (:data:`RELAYS`; name -> (listen port, target port) -> argv):

* ``direct``       no relay (the load goes to the echo server itself)
* ``direct-2cpu``  the same with the echo server on the relay's core: the two
                   cores a relayed run has, without the hop (bulk only)
* ``c-relay``      ``c/relay.c``: the same relay in C (epoll, 256 KiB per
                   direction, flow control, half-close): what any relay pays
                   for the hop on this machine
* ``socketkit``    ``socketkit relay tcp-listen:P,fork tcp:127.0.0.1:Q``
* ``uvloop``       ``servers/asyncio_relay.py``: asyncio Protocols on uvloop,
                   flow control and half-close (the reference relay)
* ``socat-b64k``   ``socat -b 65536 TCP-LISTEN:P,reuseaddr,fork TCP:127.0.0.1:Q``
* ``socat``        the same with socat's default 8 KiB buffer (bulk only)
* ``socketkit-udp``, ``socat-udp``  the same two as UDP fork relays (``relay-udp64``)
* ``socketkit-proxy``  ``socketkit proxy -p P``: the load generator opens each
                   connection with a SOCKS5 CONNECT to Q (``loadgen --socks5``),
                   done before the measurement; then the tunnel is the same
                   relay link as ``socketkit``'s (echo 64 B x100 and bulk)
* ``ncat``         ``ncat -l -k P --sh-exec 'ncat 127.0.0.1 Q'`` (only when asked for with
                   ``--relay ncat``: with 1 GiB flowing both ways at once its blocking
                   loop stalls, and the run fails after 30 s without progress)

In the table, ``vs C`` is the ratio to ``direct`` and ``vs uvloop`` to the
reference relay; bulk also shows the ratio to ``socat-b64k`` in the note.

socat and ncat cannot announce a port chosen by the OS, so every relay gets a
free port picked here and is ready when a connect succeeds (a retry loop with
a deadline). Every process is started in its own session and ended by its
process-group id (``procs.end_process``).

Run: ``python -m benchmarks --scenario relay`` (with the others by default),
or alone: ``python -m benchmarks.relay`` (``--quick``, ``--runs N``,
``--scenario NAME``, ``--relay NAME``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
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
    IdleClients,
    ServerProcess,
    Unavailable,
    child_env,
    end_process,
    group_status_kib,
    pinned,
    raise_nofile_limit,
    run_loadgen,
)
from benchmarks.registry import BIN_DIR, SERVERS_DIR, GiB, MiB, Scenario

RELAY_SCENARIOS: list[Scenario] = [
    Scenario(
        "relay-echo64-c100",
        "relay",
        "tcp",
        "64 B echo through the relay, 100 connections, 1 in flight each",
        {"conns": 100, "size": 64, "depth": 1},
    ),
    Scenario(
        "relay-echo64-c1000",
        "relay",
        "tcp",
        "64 B echo through the relay, 1000 connections, 1 in flight each",
        {"conns": 1000, "size": 64, "depth": 1},
    ),
    Scenario(
        "relay-idle-5000",
        "relay",
        "tcp",
        "5000 relayed connections held idle (10,000 sockets): relay RSS per connection",
        {"conns": 5000},
        {"conns": 1000},
        metric="KiB_per_conn",
        unit="KiB/conn",
        higher_is_better=False,
    ),
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
    Scenario(
        "relay-udp64",
        "relay",
        "udp",
        "64 B datagrams through a UDP fork relay, 4 sockets x 16 in flight",
        {"sockets": 4, "window": 16, "size": 64},
        metric="datagrams_per_s",
        unit="datagrams/s",
    ),
]
#: scenario -> how it is measured (the load generator's mode).
MODES = {
    "relay-echo64-c100": "echo",
    "relay-echo64-c1000": "echo",
    "relay-idle-5000": "idle",
    "relay-bulk-1g": "bulk",
    "relay-udp64": "udp",
}


def _socketkit(listen: int, target: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "socketkit",
        "relay",
        f"tcp-listen:127.0.0.1:{listen},fork",
        f"tcp:127.0.0.1:{target}",
    ]


def _socat(*extra: str) -> Callable[[int, int], list[str]]:
    def build(listen: int, target: int) -> list[str]:
        return [
            "socat",
            *extra,
            f"TCP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork,backlog=4096",
            f"TCP:127.0.0.1:{target}",
        ]

    return build


def _socketkit_udp(listen: int, target: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "socketkit",
        "relay",
        f"udp-listen:127.0.0.1:{listen},fork",
        f"udp:127.0.0.1:{target}",
    ]


def _socat_udp(listen: int, target: int) -> list[str]:
    return [
        "socat",
        "-b",
        "65536",
        f"UDP-LISTEN:{listen},bind=127.0.0.1,reuseaddr,fork",
        f"UDP:127.0.0.1:{target}",
    ]


def _socketkit_proxy(listen: int, _target: int) -> list[str]:
    return [sys.executable, "-m", "socketkit", "proxy", "-q", "-p", str(listen)]


# relay name -> (listen_port, target_port) -> command line
RELAYS: dict[str, Callable[[int, int], list[str]]] = {
    "direct": lambda _listen, _target: [],
    "direct-2cpu": lambda _listen, _target: [],
    "c-relay": lambda listen, target: [str(BIN_DIR / "relay"), str(listen), str(target)],
    "socketkit": _socketkit,
    "socketkit-proxy": _socketkit_proxy,
    "uvloop": lambda listen, target: [
        sys.executable,
        str(SERVERS_DIR / "asyncio_relay.py"),
        "--port",
        str(listen),
        "--target-port",
        str(target),
    ],
    "socat-b64k": _socat("-b", "65536"),
    "socat": _socat(),
    "socketkit-udp": _socketkit_udp,
    "socat-udp": _socat_udp,
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
#: Which contenders run which measurement (a process per connection is no
#: contender for 1000 echo connections or 5000 idle ones).
CONTENDERS = {
    "echo": ("direct", "c-relay", "socketkit", "uvloop", "socat-b64k", "socketkit-proxy"),
    "idle": ("socketkit", "uvloop", "socat-b64k"),
    "udp": ("direct", "socketkit-udp", "socat-udp"),
    "bulk": (
        "direct",
        "direct-2cpu",
        "c-relay",
        "socketkit",
        "uvloop",
        "socat-b64k",
        "socat",
        "ncat",
        "socketkit-proxy",
    ),
}
#: Contenders the load generator reaches through SOCKS5 (``loadgen --socks5``).
SOCKS5_CONTENDERS = ("socketkit-proxy",)
#: Contenders that run only when named (``--relay``).
ASKED_ONLY = ("ncat",)
#: Contenders that relay UDP (the echo server and the readiness probe are UDP too).
UDP_CONTENDERS = ("socketkit-udp", "socat-udp")
#: socat's UDP fork hands its listening socket to the child of the first
#: client and only then connects it to that client: what other clients sent
#: meanwhile goes out through that child and comes back to the wrong client
#: (the load generator's verify failures). Noted for it, fatal for the others.
MISROUTES = ("socat-udp",)
#: Idle connections held by socat (a process each) are capped at this many.
SOCAT_IDLE_MAX = 1000
DIRECT, REFERENCE, SOCAT = "direct", "uvloop", "socat-b64k"
#: The direct connection with the echo server on the relay's core: the same
#: two cores a relayed run has (``direct`` keeps both ends on one core, where
#: every copy is cache-hot).
DIRECT_2CPU = "direct-2cpu"


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
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
        time.sleep(0.02)  # the retry interval of a connect loop, not a synchronisation


def _wait_relaying_udp(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Ready once a probe datagram comes back through the relay (a retry loop with a deadline)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while True:
            with contextlib.suppress(OSError):
                probe.sendto(b"probe", ("127.0.0.1", port))
                if probe.recv(16) == b"probe":
                    return
            if proc.poll() is not None:
                raise Unavailable(f"relay exited with status {proc.returncode} before relaying")
            if time.monotonic() > deadline:
                raise Unavailable(f"relay not relaying on UDP port {port} within {timeout:.0f} s")


def _settled_rss(pgid: int, limit: float = 3.0) -> int:
    """Group RSS once it stops moving (two samples 100 ms apart within 0.5 %)."""
    prev = group_status_kib(pgid, "VmRSS")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.1)  # sampling interval
        cur = group_status_kib(pgid, "VmRSS")
        if abs(cur - prev) <= max(8, prev // 200):
            return cur
        prev = cur
    return prev


def _echo_held(clients: IdleClients, timeout: float) -> dict[str, Any]:
    """Ask the idle load generator for one more echo on every held connection."""
    assert clients.proc.stdin is not None
    assert clients.proc.stdout is not None
    clients.proc.stdin.write(b"echo\n")
    clients.proc.stdin.flush()
    ready, _, _ = select.select([clients.proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"no answer to the echo on the held connections within {timeout:.0f} s")
    line = clients.proc.stdout.readline().decode("utf-8", "replace").strip()
    if not line.startswith("echoed "):
        raise RuntimeError(f"unexpected answer from the load generator: {line!r}")
    return dict(json.loads(line[len("echoed ") :]))


def _run_idle(cmd: list[str], relay_pgid: int, loadgen_cpu: int | None) -> dict[str, Any]:
    before = _settled_rss(relay_pgid)
    clients = IdleClients(cmd, loadgen_cpu)
    try:
        ready = clients.wait_ready(timeout=180)
        held = int(ready.get("echoed", 0))
        if held < int(ready.get("connections", 0)) or ready.get("errors"):
            raise RuntimeError(f"only {held} of {ready.get('connections')} connections relayed")
        after = _settled_rss(relay_pgid)
        echoed = _echo_held(clients, timeout=30)
    finally:
        clients.close()
    return {
        **ready,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "KiB_per_conn": (after - before) / held,
        "echo_all": echoed,
    }


def run_relay(
    scenario: Scenario,
    relay_name: str,
    *,
    quick: bool = False,
    duration: float = 5.0,
    warmup: float = 1.0,
    relay_cpu: int | None = None,
    loadgen_cpu: int | None = None,
    echo_cpu: int | None = None,
) -> dict[str, Any]:
    """One run: echo server, relay, load generator; the load generator's JSON plus the
    relay's peak RSS (VmHWM, whole process group)."""
    mode = MODES[scenario.name]
    params = dict(scenario.effective(quick))
    if mode == "idle" and relay_name.startswith("socat"):
        params["conns"] = min(params["conns"], SOCAT_IDLE_MAX)
    if relay_name == DIRECT_2CPU:
        echo_cpu = relay_cpu  # the two cores a relayed run uses, without the relay
    protocol = "--udp" if mode == "udp" else "--tcp"
    with ServerProcess([str(BIN_DIR / "echo_server"), protocol, "0"], echo_cpu) as echo:
        argv = RELAYS[relay_name](0, 0)
        proc = None
        port = echo.port
        if argv:
            port = _free_port(socket.SOCK_DGRAM if mode == "udp" else socket.SOCK_STREAM)
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
            if proc is not None and relay_name in UDP_CONTENDERS:
                _wait_relaying_udp(port, proc)
            elif proc is not None:
                _wait_connectable(port, proc)
            cmd = [str(BIN_DIR / "loadgen"), mode, "--port", str(port)]
            if relay_name in SOCKS5_CONTENDERS:
                cmd += ["--socks5", f"127.0.0.1:{echo.port}"]
            for key, value in params.items():
                cmd += [f"--{key}", str(value)]
            if mode in ("echo", "udp"):
                cmd += ["--duration", str(duration), "--warmup", str(warmup)]
                result = run_loadgen(cmd, loadgen_cpu, timeout=duration + warmup + 120)
            elif mode == "idle":
                assert proc is not None
                result = _run_idle(cmd, proc.pid, loadgen_cpu)
            else:
                result = run_loadgen(cmd, loadgen_cpu, timeout=900)
            if proc is not None:
                if proc.poll() is not None:
                    raise RuntimeError(f"relay exited during the run (status {proc.returncode})")
                result["relay_peak_rss_kib"] = group_status_kib(proc.pid, "VmHWM")
                result["relay_command"] = " ".join(argv)
        finally:
            if proc is not None:
                end_process(proc)
    checked = ["error", "verify_failures", "errors", "connect_failures"]
    if relay_name in MISROUTES:
        checked.remove("verify_failures")  # counted in the note instead
    problems = [k for k in checked if result.get(k)]
    if problems:
        raise RuntimeError(f"load generator saw {', '.join(problems)}: {result}")
    return result


def _note(mode: str, entry: dict[str, Any]) -> str:
    parts = []
    runs = entry["runs"]
    if mode == "echo":
        starved = max(int(r.get("conns_without_replies", 0)) for r in runs)
        conns = runs[0].get("connected", 0)
        parts.append(
            f"all {conns} conns served" if starved == 0 else f"{starved} conns got no reply"
        )
        parts.append(f"min {min(int(r.get('min_conn_requests', 0)) for r in runs)} req/conn")
    elif mode == "idle":
        slowest = max(float(r["echo_all"]["seconds"]) for r in runs)
        echoed = min(int(r["echo_all"]["echoed"]) for r in runs)
        parts.append(f"{runs[0]['echoed']} conns, echo on each in {slowest:.2f} s ({echoed} ok)")
    elif mode == "udp":
        parts.append(f"{max(int(r.get('resends', 0)) for r in runs)} window resends (max)")
        misrouted = max(int(r.get("verify_failures", 0)) for r in runs)
        if misrouted:
            parts.append(f"{misrouted} datagrams to the wrong client (max)")
    if f"vs_{SOCAT}" in entry and mode == "bulk":
        parts.append(f"{entry[f'vs_{SOCAT}']:.2f}x {SOCAT}")
    if "vs_socat-udp" in entry:
        parts.append(f"{entry['vs_socat-udp']:.2f}x socat-udp")
    if "relay_peak_rss_kib" in entry and mode != "idle":
        parts.append(f"peak RSS {entry['relay_peak_rss_kib'] / 1024:.0f} MiB")
    return ", ".join(parts)


def bench_relays(
    scenario: Scenario,
    *,
    runs: int,
    quick: bool = False,
    duration: float = 5.0,
    warmup: float = 1.0,
    relay_cpu: int | None = None,
    loadgen_cpu: int | None = None,
    names: list[str] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict[str, dict[str, Any]]:
    """Every contender of the scenario, ``runs`` times, interleaved (run 1 of each, then
    run 2, ...) so that a noisy machine affects them alike; entries shaped like the runner's."""
    mode = MODES[scenario.name]
    cpus = sorted(os.sched_getaffinity(0))
    echo_cpu = cpus[2] if len(cpus) > 2 and relay_cpu is not None else loadgen_cpu
    default = [n for n in CONTENDERS[mode] if n not in ASKED_ONLY]
    names = [n for n in (names or default) if n in CONTENDERS[mode]]
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
                    duration=duration,
                    warmup=warmup,
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
            log(f"{tag}: {result[scenario.metric]:,.2f} {scenario.unit}")
    for entry in entries.values():
        values = [float(r[scenario.metric]) for r in entry["runs"]]
        if entry.get("status") == "unavailable":
            continue
        if not values:
            entry.update(status="failed", reason=(entry["failures"] or ["no runs"])[0])
            continue
        entry.update(status="ok", median=statistics.median(values), values=values)
        rss = [r["relay_peak_rss_kib"] for r in entry["runs"] if "relay_peak_rss_kib" in r]
        if rss:
            entry["relay_peak_rss_kib"] = max(rss)
        lat = [r["latency_us"] for r in entry["runs"] if "latency_us" in r]
        if lat:
            entry["latency_us"] = {k: statistics.median(x[k] for x in lat) for k in lat[0]}
    references = ((DIRECT, "vs_c"), (REFERENCE, "vs_uvloop"), (SOCAT, f"vs_{SOCAT}"))
    for ref, key in (*references, ("socat-udp", "vs_socat-udp")):
        ref_entry = entries.get(ref, {})
        if ref_entry.get("status") == "ok":
            for entry in entries.values():
                if entry.get("status") == "ok":
                    entry[key] = entry["median"] / ref_entry["median"]
    for entry in entries.values():
        if entry.get("status") == "ok":
            note = _note(mode, entry)
            if entry["failures"]:
                note += f"; {len(entry['failures'])} of {runs} runs failed: {entry['failures'][0]}"
            entry["reason"] = note
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.relay", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 run, 1 s, 64 MiB, 1000 idle")
    p.add_argument("--runs", type=int, help="runs per relay (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="measured seconds per echo run (default 5)")
    p.add_argument("--scenario", action="append", choices=list(MODES), help="scenarios to run")
    p.add_argument("--relay", action="append", choices=list(RELAYS), help="relays to run")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    subprocess.run(["make", "-C", str(BIN_DIR.parent / "c")], capture_output=True, check=False)
    raise_nofile_limit()
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpu = loadgen_cpu = None
    if not args.no_pin and shutil.which("taskset") and len(cpus) >= 2:
        loadgen_cpu, relay_cpu = cpus[0], cpus[1]
    runs = args.runs or (1 if args.quick else 3)
    duration = args.duration or (1.0 if args.quick else 5.0)
    results = {}
    for sc in RELAY_SCENARIOS:
        if args.scenario and sc.name not in args.scenario:
            continue
        entries = bench_relays(
            sc,
            runs=runs,
            quick=args.quick,
            duration=duration,
            warmup=0.25 if args.quick else 1.0,
            relay_cpu=relay_cpu,
            loadgen_cpu=loadgen_cpu,
            names=args.relay,
        )
        results[sc.name] = entries
        print(f"{sc.name}: {sc.description}; median of {runs} run(s), {sc.unit}")
        print(f"  {'relay':16} {'median':>10} {'vs direct':>9} {'vs uvloop':>9}  note")
        for name, e in entries.items():
            if e.get("status") == "ok":
                ratios = [f"{e[k]:.2f}x" if k in e else "-" for k in ("vs_c", "vs_uvloop")]
                print(
                    f"  {name:16} {e['median']:10,.2f} {ratios[0]:>9} {ratios[1]:>9}"
                    f"  {e.get('reason', '')}"
                )
            else:
                print(f"  {name:16} {e.get('status', '?'):>10}  {e.get('reason', '')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
