"""The benchmark harness still runs: a quick pass with the C server and socketkit.

Speed targets live in the benchmark's own ratios, never in assertions; this
only checks that the one-command benchmark builds, runs every server to the
end and verifies every echoed byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("scenario", ["echo64-c100", "udp64"])
def test_quick_benchmark_runs_and_verifies(scenario: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--scenario",
            scenario,
            "--server",
            "c",
            "--server",
            "socketkit",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (result,) = json.loads(out.read_text())["scenarios"]
    for server in ("c", "socketkit"):
        row = result["results"][server]
        assert row["status"] == "ok", row
        assert row["median"] > 0
        assert all(run.get("verify_failures", 0) == 0 for run in row["runs"])


def test_quick_scaling_layouts_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("scale-")]
    # At least one worker alone and one layout with a worker per core.
    assert any(" w1 " in row and "req/s" in row for row in rows), done.stdout
    assert "FAILED" not in done.stdout


def test_scaling_layouts_by_core_count() -> None:
    from benchmarks.scaling import layouts

    two = [(lay.family, lay.workers, lay.server_cpus, lay.loadgen_cpus) for lay in layouts([0, 1])]
    assert two == [
        ("apart", 1, (1,), (0,)),
        ("shared", 1, (0, 1), (0, 1)),
        ("shared", 2, (0, 1), (0, 1)),
    ]
    eight = layouts(list(range(8)))
    apart = [lay for lay in eight if lay.family == "apart"]
    assert [lay.workers for lay in apart] == [1, 2, 3, 4]
    assert all(lay.loadgen_cpus == (0, 1, 2, 3) for lay in apart)


def test_quick_relay_bulk_verifies_through_the_c_relay_and_socketkit(tmp_path: Path) -> None:
    out = tmp_path / "relay.json"
    argv = [sys.executable, "-m", "benchmarks.relay", "--quick", "--scenario", "relay-bulk-1g"]
    for relay in ("direct", "c-relay", "socketkit"):
        argv += ["--relay", relay]
    done = subprocess.run(
        [*argv, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(out.read_text())["relay-bulk-1g"]
    for relay in ("direct", "c-relay", "socketkit"):
        assert rows[relay]["status"] == "ok", rows[relay]
        for run in rows[relay]["runs"]:
            assert run["sent"] == run["received"] == run["bytes"] > 0
            assert run["verify_failures"] == 0


def test_quick_udp_relay_benchmark_runs_and_verifies(tmp_path: Path) -> None:
    """relay-udp64: the C echo direct and through socketkit's UDP fork relay."""
    out = tmp_path / "result.json"
    argv = ["--quick", "--scenario", "relay-udp64", "--relay", "direct", "--relay", "socketkit-udp"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.relay", *argv, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(out.read_text())["relay-udp64"]
    for name in ("direct", "socketkit-udp"):
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["median"] > 0
        assert all(run.get("verify_failures", 0) == 0 for run in rows[name]["runs"])
