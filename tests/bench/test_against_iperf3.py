"""socketkit bench against iperf3 on the same loopback, in the same run.

Figures compared (the tolerance is stated with each):
- UDP at a fixed bitrate: both tools must report the target rate within 5 %,
  and no loss beyond 1 % on loopback. This checks our pacing and accounting
  against iperf3's.
- TCP as fast as possible: iperf3 (C, zero-copy-free writes of 128 KiB) is
  the ceiling of the machine; ours (Python at both ends) must reach at least
  a fifth of it with one stream. The ratio is printed for the record.

iperf3 cannot listen on port 0, so the port is one the kernel just handed
out and released (a small race, acceptable for a tools test).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from socketkit.bench import BenchConfig, run_bench

from helpers import Proc, free_port

pytestmark = [
    pytest.mark.tools,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed"),
]

#: UDP: both tools within this fraction of the target bitrate.
UDP_TOLERANCE = 0.05
#: TCP: ours at least this fraction of iperf3's throughput.
TCP_FLOOR = 0.2
DURATION = 3


def _iperf3(*client_args: str) -> dict[str, object]:
    port = free_port()
    server_argv = ["iperf3", "-s", "-1", "--forceflush", "-B", "127.0.0.1", "-p", str(port)]
    with Proc(server_argv) as server:
        server.search("Server listening")  # ready when it says so
        out = subprocess.run(
            ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-J", *client_args],
            capture_output=True,
            text=True,
            timeout=DURATION + 30,
        )
    assert out.returncode == 0, out.stdout + out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_udp_bitrate_agrees_with_iperf3(bench_port: int) -> None:
    target = 100e6
    theirs = _iperf3("-u", "-b", "100M", "-t", str(DURATION), "-l", "1460")
    their_rate = theirs["end"]["sum"]["bits_per_second"]  # type: ignore[index]
    ours = run_bench(
        BenchConfig(port=bench_port, mode="udp", bitrate=target, duration=DURATION, length=1460)
    )
    our_rate = ours["summary"]["forward"]["receiver"]["bits_per_second"]
    print(
        f"\nUDP 100M: iperf3 {their_rate / 1e6:.2f} Mbit/s, socketkit {our_rate / 1e6:.2f} Mbit/s"
    )
    assert abs(their_rate - target) / target < UDP_TOLERANCE
    assert abs(our_rate - target) / target < UDP_TOLERANCE
    assert ours["udp"]["lost_percent"] < 1.0


def test_tcp_throughput_against_iperf3(bench_port: int) -> None:
    theirs = _iperf3("-t", str(DURATION))
    their_rate = theirs["end"]["sum_received"]["bits_per_second"]  # type: ignore[index]
    ours = run_bench(BenchConfig(port=bench_port, duration=DURATION))
    our_rate = ours["summary"]["forward"]["receiver"]["bits_per_second"]
    print(
        f"\nTCP 1 stream: iperf3 {their_rate / 1e9:.2f} Gbit/s, socketkit {our_rate / 1e9:.2f}"
        f" Gbit/s, ratio {our_rate / their_rate:.2f}; client CPU {ours['client']['cpu_percent']}"
    )
    assert our_rate >= TCP_FLOOR * their_rate
