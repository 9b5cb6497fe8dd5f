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
