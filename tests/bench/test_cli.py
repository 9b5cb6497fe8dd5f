"""``socketkit bench`` as a command: iperf3's habits, output files, signals."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from helpers import LOOPBACK_TIMEOUT, Server, run_cli, socketkit_argv, start_server

pytestmark = pytest.mark.timeout(60)


def test_zero_time_runs_until_interrupted_then_reports(bench_port: int) -> None:
    argv = socketkit_argv(
        "bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0", "-i", "0.2"
    )
    with Server(argv) as client:
        client.wait_for(r" sec ")  # running: the first interval is out
        client.proc.send_signal(signal.SIGINT)
        assert client.wait(LOOPBACK_TIMEOUT) == 0, client.err
        assert "receiver" in client.out
        assert "Traceback" not in client.err


def test_logfile_gets_the_output(bench_port: int, tmp_path: Path) -> None:
    log = tmp_path / "bench.log"
    argv = ["bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0.2", "--json"]
    result = run_cli(*argv, "--logfile", str(log))
    assert result.code == 0, result.err
    assert result.out == "", result.err
    assert json.loads(log.read_text())["end"]["sum_sent"]["bytes"] > 0
    bad = run_cli(*argv, "--logfile", str(tmp_path / "missing" / "x.log"))
    assert bad.code == 2
    assert "cannot open the log file" in bad.err


def test_omitted_seconds_are_left_out(bench_port: int) -> None:
    argv = ["bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0.4", "-O", "1"]
    result = run_cli(*argv, "-i", "0.5", "-J")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["intervals"][0]["sum"]["omitted"] is True
    assert doc["intervals"][-1]["sum"]["omitted"] is False
    end = doc["end"]
    everything = sum(i["sum"]["bytes"] for i in doc["intervals"])
    # Each end leaves out what moved in its first second, by its own clock
    # (as iperf3 does), so the two figures are close but need not be equal.
    for side in ("sum_sent", "sum_received"):
        assert 0 < end[side]["bytes"] < everything


def test_one_off_server_reports_one_test_in_json_and_exits() -> None:
    with start_server("bench", "server", "-p", "0", "-1", "-J") as server:
        port = server.port()
        result = run_cli(
            "bench",
            "client",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            "0.2",
            "-J",
            "--get-server-output",
        )
        assert result.code == 0, result.err
        assert server.wait(LOOPBACK_TIMEOUT) == 0
        report = server.out.split("\n", 1)[1]  # after the listening line
    theirs = json.loads(report)
    ours = json.loads(result.out)
    assert ours["server_output_json"]["end"] == theirs["end"]
    assert theirs["end"]["sum_received"]["bytes"] == ours["end"]["sum_sent"]["bytes"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-u", "-l", "70000"], "UDP datagram"),
        (["-R", "--bidir"], "exclude"),
        (["-P", "200"], "128 streams"),
        (["--latency", "-t", "0"], "--latency needs a duration"),
        (["-b", "fast"], "bitrate"),
    ],
)
def test_bad_options_are_one_line(argv: list[str], words: str) -> None:
    result = run_cli("bench", "client", "127.0.0.1", "-p", "1", *argv)
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1
    assert words in result.err
