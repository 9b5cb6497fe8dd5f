"""The benchmark driver: ``python -m benchmarks [options]``.

For every selected scenario and server it runs ``--runs`` measurements, each on
a fresh server process (started pinned to the server core, waited for through
its ``listening on port N`` line, ended by pid afterwards), with the C load
generator pinned to the other core.  It prints the medians and their ratios to
the C epoll server and to asyncio+uvloop, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import relay, scaling
from benchmarks.procs import (
    CpuMeter,
    IdleClients,
    ServerProcess,
    Unavailable,
    raise_nofile_limit,
    run_loadgen,
    settled_rss_kib,
)
from benchmarks.registry import (
    BENCH_DIR,
    BIN_DIR,
    REF_C,
    REF_UVLOOP,
    SCENARIOS,
    SERVERS,
    Context,
    Scenario,
    ServerSpec,
)
from benchmarks.report import print_report

LOADGEN = BIN_DIR / "loadgen"
# A run during which other processes used this much of a core (%) is flagged as noisy.
NOISY_OTHERS_PCT = 10.0


class Settings(argparse.Namespace):
    quick: bool
    runs: int
    duration: float
    warmup: float
    server_cpu: int | None
    loadgen_cpu: int | None
    cpus: list[int]  # every CPU the run may use, before the driver pins itself
    ctx: Context


def all_scenarios() -> list[Scenario]:
    return [*SCENARIOS, *relay.RELAY_SCENARIOS, *scaling.SCALE_SCENARIOS]


# --------------------------------------------------------------- one run per kind


def _loadgen_cmd(mode: str, port: int, params: dict[str, Any]) -> list[str]:
    cmd = [str(LOADGEN), mode, "--port", str(port)]
    for key, value in params.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def _check(result: dict[str, Any]) -> None:
    """Turn what the load generator saw go wrong into a failed run."""
    problems = []
    if result.get("error"):
        problems.append(str(result["error"]))
    if result.get("verify_failures"):
        problems.append(f"{result['verify_failures']} echoes did not match what was sent")
    if result.get("connect_failures"):
        problems.append(f"{result['connect_failures']} connections failed")
    if result.get("errors"):
        reason = f" ({result['reason']})" if result.get("reason") else ""
        problems.append(f"{result['errors']} connection errors{reason}")
    if problems:
        raise RuntimeError("; ".join(problems))


def _measured(
    cmd: list[str], server: ServerProcess, st: Settings, timeout: float
) -> dict[str, Any]:
    """Run the load generator; add how busy the cores were (and by whom)."""
    meter = CpuMeter(server.proc.pid)
    result = run_loadgen(cmd, st.loadgen_cpu, timeout)
    result["cpu_busy_pct"] = meter.stop(st.server_cpu, st.loadgen_cpu)
    _check(result)
    return result


def run_timed(sc: Scenario, server: ServerProcess, st: Settings) -> dict[str, Any]:
    """echo and udp: a warm-up, then ``duration`` seconds of counting."""
    params = {**sc.effective(st.quick), "duration": st.duration, "warmup": st.warmup}
    timeout = st.duration + st.warmup + 90
    return _measured(_loadgen_cmd(sc.kind, server.port, params), server, st, timeout)


def run_bulk(sc: Scenario, server: ServerProcess, st: Settings) -> dict[str, Any]:
    params = sc.effective(st.quick)
    return _measured(_loadgen_cmd("bulk", server.port, params), server, st, 900)


def run_idle(sc: Scenario, server: ServerProcess, st: Settings) -> dict[str, Any]:
    params = sc.effective(st.quick)
    conns = int(params["conns"])
    before = settled_rss_kib(server)
    clients = IdleClients(_loadgen_cmd("idle", server.port, params), st.loadgen_cpu)
    try:
        ready = clients.wait_ready(timeout=180)
        _check(ready)
        after = settled_rss_kib(server)
        if not server.alive():
            raise RuntimeError(f"server died holding the connections: {server.exit_reason()}")
    finally:
        clients.close()
    held = int(ready.get("echoed", conns))
    return {
        **ready,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "KiB_per_conn": (after - before) / held if held else 0.0,
    }


KindRunner = Callable[[Scenario, ServerProcess, Settings], dict[str, Any]]

KIND_RUNNERS: dict[str, KindRunner] = {
    "echo": run_timed,
    "udp": run_timed,
    "bulk": run_bulk,
    "idle": run_idle,
    # "relay" scenarios are not runs on an echo server: bench_relay_scenario hands them
    # to benchmarks/relay.py, which runs its own contenders (socketkit relay, socat, ncat).
}


# --------------------------------------------------------------- orchestration


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_value(v: float) -> str:
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"


def new_entry(sc: Scenario, spec: ServerSpec, st: Settings) -> dict[str, Any]:
    entry: dict[str, Any] = {"server": spec.name, "label": spec.label, "runs": [], "failures": []}
    command = spec.command(sc.protocol)
    if command is None:
        entry.update(status="n/a", reason=f"no {sc.protocol.upper()} variant")
    else:
        entry["command"] = shlex.join(command(st.ctx))
    return entry


def one_run(sc: Scenario, spec: ServerSpec, st: Settings, entry: dict[str, Any], i: int) -> None:
    """Run ``sc`` once on a fresh ``spec`` server and record it in ``entry``; never raises
    (but Ctrl-C).  A server that cannot start is marked unavailable and not tried again."""
    command = spec.command(sc.protocol)
    if command is None or entry.get("status") in ("n/a", "unavailable"):
        return
    cmd = command(st.ctx)
    tag = f"[{sc.name}] {spec.name} run {i}/{st.runs}"
    try:
        with ServerProcess(cmd, st.server_cpu) as server:
            t0 = time.monotonic()
            try:
                result = KIND_RUNNERS[sc.kind](sc, server, st)
            except Exception as exc:
                if server.alive():
                    raise
                # The server's death explains the run better than what the clients saw.
                raise RuntimeError(f"server exited during the run: {server.exit_reason()}") from exc
            result["wall_seconds"] = round(time.monotonic() - t0, 3)
            if not server.alive():
                raise RuntimeError(f"server exited during the run: {server.exit_reason()}")
    except Unavailable as exc:
        log(f"{tag}: unavailable ({exc})")
        if entry["runs"]:  # it started before: keep what was measured
            entry["failures"].append(f"unavailable: {exc}")
        entry["status"] = "unavailable"
        entry["reason"] = str(exc)
        return
    except Exception as exc:
        entry["failures"].append(str(exc))
        log(f"{tag}: FAILED ({exc})")
        return
    entry["runs"].append(result)
    log(f"{tag}: {fmt_value(float(result[sc.metric]))} {sc.unit}")


def summarize(sc: Scenario, entry: dict[str, Any], st: Settings) -> None:
    """Medians over the runs of one server (status ok / failed / unavailable / n/a)."""
    values = [float(r[sc.metric]) for r in entry["runs"]]
    if not values:
        if entry.get("status") not in ("n/a", "unavailable"):
            entry["status"] = "failed"
            entry["reason"] = entry["failures"][0] if entry["failures"] else "no runs"
        return
    entry.update(status="ok", median=statistics.median(values), values=values)
    entry.pop("reason", None)
    lat = [r["latency_us"] for r in entry["runs"] if "latency_us" in r]
    if lat:
        entry["latency_us"] = {k: statistics.median(x[k] for x in lat) for k in lat[0]}
    cpu = [r["cpu_busy_pct"] for r in entry["runs"] if "cpu_busy_pct" in r]
    if cpu:
        entry["cpu_busy_pct"] = {
            k: statistics.median(vals) if None not in (vals := [c[k] for c in cpu]) else None
            for k in cpu[0]
        }
        busiest = max((c["others"] or 0.0) for c in cpu)
        if busiest >= NOISY_OTHERS_PCT:
            entry["noisy"] = f"other processes used up to {busiest:.0f}% of a core"
    if entry["failures"]:
        entry["reason"] = (
            f"{len(entry['failures'])} of {st.runs} runs failed: {entry['failures'][0]}"
        )


def bench_scenario(
    sc: Scenario, servers: list[ServerSpec], st: Settings, sc_result: dict[str, Any]
) -> None:
    """All runs of one scenario.  Runs are interleaved (run 1 of every server, then
    run 2, ...) so that a disturbance on the machine does not fall on one server only."""
    entries = sc_result["results"]
    for spec in servers:
        entries[spec.name] = new_entry(sc, spec, st)
    try:
        for i in range(1, st.runs + 1):
            for spec in servers:
                one_run(sc, spec, st, entries[spec.name], i)
    finally:
        for spec in servers:
            summarize(sc, entries[spec.name], st)
        add_ratios(sc_result)


def bench_relay_scenario(sc: Scenario, st: Settings, sc_result: dict[str, Any]) -> None:
    """A relay-throughput scenario: every relay of ``relay.RELAYS``, interleaved runs.
    Its ratios are against socat (in the note column), not against the echo servers."""
    sc_result["references"] = list(getattr(relay, "REFERENCES", ()))
    try:
        sc_result["results"] = relay.bench_relays(
            sc,
            runs=st.runs,
            quick=st.quick,
            duration=st.duration,
            warmup=st.warmup,
            relay_cpu=st.server_cpu,
            loadgen_cpu=st.loadgen_cpu,
            log=log,
        )
    except Exception as exc:  # never let one scenario end the run
        log(f"[{sc.name}] FAILED ({exc})")
        sc_result["results"] = {
            "relays": {"server": "relays", "status": "failed", "reason": str(exc), "runs": []}
        }


def bench_scale_scenario(sc: Scenario, st: Settings, sc_result: dict[str, Any]) -> None:
    """The multi-core layouts of ``scaling``: socketkit alone, against itself with one worker."""
    try:
        sc_result["results"] = scaling.bench_scaling(
            sc,
            runs=st.runs,
            quick=st.quick,
            duration=st.duration,
            warmup=st.warmup,
            python=st.ctx.python,
            extra=st.ctx.socketkit_args,
            cpus=st.cpus,
            log=log,
        )
    except Exception as exc:  # never let one scenario end the run
        log(f"[{sc.name}] FAILED ({exc})")
        sc_result["results"] = {
            "layouts": {"server": "layouts", "status": "failed", "reason": str(exc), "runs": []}
        }


#: Kinds that run their own contenders instead of the echo servers of ``--server``.
OWN_CONTENDERS: dict[str, Callable[[Scenario, Settings, dict[str, Any]], None]] = {
    "relay": bench_relay_scenario,
    "scale": bench_scale_scenario,
}


def add_ratios(sc_result: dict[str, Any]) -> None:
    results = sc_result["results"]
    for ref_name, key in ((REF_C, "vs_c"), (REF_UVLOOP, "vs_uvloop")):
        ref = results.get(ref_name, {})
        ref_value = ref.get("median") if ref.get("status") == "ok" else None
        for entry in results.values():
            if entry.get("status") == "ok" and ref_value:
                entry[key] = entry["median"] / ref_value


def build(verbose: bool) -> None:
    try:
        out = subprocess.run(
            ["make", "-C", str(BENCH_DIR / "c")], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemExit(f"benchmarks: cannot build the C programs: {exc}") from None
    if out.returncode != 0:
        raise SystemExit(f"benchmarks: make failed:\n{out.stdout}{out.stderr}")
    if verbose:
        log(out.stdout.strip())


def choose_cpus(args: argparse.Namespace) -> tuple[int | None, int | None, str]:
    if args.no_pin:
        return None, None, "not pinned (--no-pin)"
    if not shutil.which("taskset"):
        return None, None, "not pinned: taskset not found"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, f"not pinned: only CPU {cpus} available"
    server = args.server_cpu if args.server_cpu is not None else cpus[1]
    loadgen = args.loadgen_cpu if args.loadgen_cpu is not None else cpus[0]
    return server, loadgen, f"server on CPU {server}, load generator on CPU {loadgen}"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in all_scenarios()]
    kinds = sorted({s.kind for s in all_scenarios()})
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark socketkit's server engine against reference echo servers "
        "on one C load generator, and report medians and ratios.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 run, 1 s, bulk 64 MiB, 1000 idle connections",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=f"scenario or kind to run (repeatable): {', '.join(names + kinds)}",
    )
    p.add_argument(
        "--server",
        action="append",
        metavar="NAME",
        help=f"server to run (repeatable): {', '.join(SERVERS)}",
    )
    p.add_argument("--runs", type=int, help="runs per scenario and server (default 3; quick 1)")
    p.add_argument(
        "--duration", type=float, help="measured seconds per timed run (default 5; quick 1)"
    )
    p.add_argument(
        "--warmup", type=float, help="warm-up seconds before counting (default 1; quick 0.25)"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the Python servers and socketkit (default: this one)",
    )
    p.add_argument(
        "--socketkit-args",
        default="",
        metavar="ARGS",
        help='extra arguments for the socketkit server, e.g. "--max-conns 20000" '
        "(a single option needs the = form: --socketkit-args=-q)",
    )
    p.add_argument("--server-cpu", type=int, help="CPU for the servers (default: the second one)")
    p.add_argument(
        "--loadgen-cpu", type=int, help="CPU for the load generator (default: the first)"
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--no-build", action="store_true", help="do not run make first")
    p.add_argument("--list", action="store_true", help="list scenarios and servers, then exit")
    args = p.parse_args(argv)
    for name in args.server or []:
        if name not in SERVERS:
            p.error(f"unknown server {name!r}; known: {', '.join(SERVERS)}")
    for name in args.scenario or []:
        if name not in names and name not in kinds:
            p.error(f"unknown scenario {name!r}; known: {', '.join(names + kinds)}")
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for sc in all_scenarios():
            print(f"{sc.name:18} {sc.kind:5} {sc.protocol}  {sc.description}")
        print()
        for spec in SERVERS.values():
            protos = "/".join(p for p in ("tcp", "udp") if spec.command(p))
            print(f"{spec.name:18} {protos:7} {spec.label}")
        return 0

    st = Settings()
    st.quick = args.quick
    st.runs = args.runs or (1 if args.quick else 3)
    st.duration = args.duration or (1.0 if args.quick else 5.0)
    st.warmup = args.warmup if args.warmup is not None else (0.25 if args.quick else 1.0)
    st.ctx = Context(python=args.python, socketkit_args=tuple(shlex.split(args.socketkit_args)))
    st.server_cpu, st.loadgen_cpu, pin_note = choose_cpus(args)
    st.cpus = sorted(os.sched_getaffinity(0))

    # SIGTERM unwinds like Ctrl-C, so every started process is ended by the finally blocks.
    signal.signal(signal.SIGTERM, _terminate)
    nofile = raise_nofile_limit()
    if not args.no_build:
        build(verbose=False)
    if not LOADGEN.exists():
        raise SystemExit(f"benchmarks: {LOADGEN} is missing; run make -C benchmarks/c")
    if st.loadgen_cpu is not None:
        # Keep this driver (and its pipe-draining threads) off the server's core.
        os.sched_setaffinity(0, {st.loadgen_cpu})

    selected = args.scenario or []
    scenarios = [
        s for s in all_scenarios() if not selected or s.name in selected or s.kind in selected
    ]
    # Relay and scaling scenarios have their own contenders: they run by default and
    # when asked for, but not when --server narrows the run to some echo servers.
    scenarios = [
        s
        for s in scenarios
        if s.kind in KIND_RUNNERS
        or (
            s.kind in OWN_CONTENDERS
            and (not args.server or s.name in selected or s.kind in selected)
        )
    ]
    servers = [SERVERS[n] for n in (args.server or SERVERS)]

    started = dt.datetime.now()
    log(
        f"benchmarks: {len(scenarios)} scenarios x {len(servers)} servers, {st.runs} runs each, "
        f"{st.duration:g} s (+{st.warmup:g} s warm-up) per timed run; {pin_note}; "
        f"fd limit {nofile}"
    )
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "settings": {
            "quick": st.quick,
            "runs": st.runs,
            "duration": st.duration,
            "warmup": st.warmup,
            "pinning": pin_note,
            "python": st.ctx.python,
            "socketkit_args": list(st.ctx.socketkit_args),
            "fresh_server_per_run": True,
            "run_order": "interleaved: run 1 of every server, then run 2, ...",
            "noisy_threshold_pct_of_a_core": NOISY_OTHERS_PCT,
        },
        "machine": machine_info(),
        "scenarios": [],
    }
    try:
        import uvloop  # type: ignore[import-not-found]

        report["machine"]["uvloop"] = uvloop.__version__
    except ImportError:
        pass
    interrupted = False
    try:
        for sc in scenarios:
            sc_result: dict[str, Any] = {
                "name": sc.name,
                "kind": sc.kind,
                "protocol": sc.protocol,
                "description": sc.description,
                "params": sc.effective(st.quick),
                "metric": sc.metric,
                "unit": sc.unit,
                "higher_is_better": sc.higher_is_better,
                "results": {},
            }
            report["scenarios"].append(sc_result)
            if sc.kind in OWN_CONTENDERS:
                OWN_CONTENDERS[sc.kind](sc, st, sc_result)
            else:
                bench_scenario(sc, servers, st, sc_result)
    except KeyboardInterrupt:
        interrupted = True
        log("benchmarks: interrupted; reporting what was measured")
    report["seconds"] = round((dt.datetime.now() - started).total_seconds(), 1)

    print_report(report)
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    paths = [out_dir / f"{started:%Y%m%d-%H%M%S}.json"]
    if args.json:
        paths.append(args.json)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        log(f"benchmarks: wrote {path}")
    return 130 if interrupted else 0
