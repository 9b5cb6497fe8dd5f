"""The bench's figures against loads whose answer is known (socketkit at both ends)."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from socketkit.bench import BenchConfig, Histogram, IntervalSample, UdpStats, run_bench

from helpers import run_cli

pytestmark = pytest.mark.timeout(30)

#: A paced sender must land within this fraction of its target rate.
RATE_TOLERANCE = 0.10


def _per_stream_agrees(doc: dict[str, Any]) -> None:
    """Bytes sent by one end equal bytes received by the other, stream by stream."""
    for s in doc["end"]["streams"]:
        assert s["sender"]["bytes"] == s["receiver"]["bytes"] > 0, s


def test_rate_limited_tcp_gives_the_target_throughput(bench_port: int) -> None:
    target = 40e6
    doc = run_bench(
        BenchConfig(port=bench_port, duration=1.0, bitrate=target, length=16384, interval=0.25)
    )
    for side in ("sum_sent", "sum_received"):
        rate = doc["end"][side]["bits_per_second"]
        assert abs(rate - target) / target < RATE_TOLERANCE, (side, rate)
    _per_stream_agrees(doc)
    assert len(doc["intervals"]) >= 3


def test_udp_seeded_loss_is_reported_exactly(bench_port: int) -> None:
    doc = run_bench(
        BenchConfig(
            port=bench_port, mode="udp", duration=0.5, bitrate=5e6, simulate_loss=0.1, seed=3
        )
    )
    (stream,) = doc["end"]["streams"]
    udp = stream["udp"]
    received = doc["end"]["sum_received"]
    assert udp["lost_packets"] > 10
    assert udp["lost_packets"] * 1460 == udp["packets"] * 1460 - received["bytes"]
    assert udp["lost_percent"] == pytest.approx(100 * udp["lost_packets"] / udp["packets"])
    assert udp["out_of_order"] == 0


def test_reverse_bidir_and_byte_counts_move_exact_figures(bench_port: int) -> None:
    rev = run_bench(BenchConfig(port=bench_port, duration=0.3, reverse=True, streams=2))
    assert [s["sender"]["sender"] for s in rev["end"]["streams"]] == [False, False]
    _per_stream_agrees(rev)
    both = run_bench(BenchConfig(port=bench_port, duration=0.3, bidir=True))
    assert {"sum_sent", "sum_sent_bidir_reverse"} <= set(both["end"])
    _per_stream_agrees(both)
    counted = run_bench(BenchConfig(port=bench_port, num_bytes=3_000_000, length=65536))
    assert counted["end"]["sum_sent"]["bytes"] == counted["end"]["sum_received"]["bytes"]
    assert counted["end"]["sum_sent"]["bytes"] == 3_000_000


def test_zero_duration_runs_until_stopped(bench_port: int) -> None:
    stop = threading.Event()
    seen: list[IntervalSample] = []

    def on_interval(sample: IntervalSample) -> None:
        seen.append(sample)
        if len(seen) == 2:
            stop.set()  # what Ctrl-C does at the command line

    doc = run_bench(BenchConfig(port=bench_port, duration=0, interval=0.1), on_interval, stop)
    assert len(doc["intervals"]) >= 2
    _per_stream_agrees(doc)


def test_latency_percentiles_are_ordered(bench_port: int) -> None:
    doc = run_bench(BenchConfig(port=bench_port, mode="latency", duration=0.3, streams=2, depth=4))
    lat = doc["end"]["latency"]
    assert lat["requests"] > 100
    p = lat["percentiles_us"]
    assert 0 < p["min"] <= p["p50"] <= p["p90"] <= p["p99"] <= p["p99.9"] <= p["max"]
    assert sum(n for _, n in lat["histogram_us"]) == lat["requests"]


def test_histogram_percentiles_within_its_precision() -> None:
    hist = Histogram()
    for v in range(1, 10_001):
        hist.record(v * 1000)  # 1 us .. 10 ms, uniform
    for pct, exact in ((50, 5_000_000), (90, 9_000_000), (99, 9_900_000), (99.9, 9_990_000)):
        assert exact <= hist.percentile(pct) <= exact * 1.008
    assert hist.percentile(100) == hist.max == 10_000_000
    other = Histogram()
    other.record(20_000_000)
    hist.merge(other)
    assert hist.count == 10_001
    assert hist.max == 20_000_000
    assert Histogram.from_counts(hist.to_counts()).percentile(50) == hist.percentile(50)


def test_udp_stats_count_reordering_and_jitter_as_iperf() -> None:
    stats = UdpStats()
    # Sequence 1 2 4 3 5: 3 arrives late (out of order), nothing lost in the end.
    for seq in (1, 2, 4, 3, 5):
        stats.add(seq, sent_ns=seq * 1000, arrival_ns=seq * 1000 + 500, size=100)
    assert (stats.out_of_order, stats.lost, stats.highest) == (1, 0, 5)
    assert stats.jitter_ns == 0  # constant transit time: no jitter
    stats = UdpStats()
    stats.add(1, 0, 100, 10)
    stats.add(2, 1000, 1260, 10)  # transit 100 then 260: D = 160
    assert stats.jitter_ns == pytest.approx(160 / 16)


def test_json_output_has_iperf3s_shape(bench_port: int) -> None:
    result = run_cli("bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0.3", "-J")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert set(doc) >= {"start", "intervals", "end"}
    assert doc["start"]["test_start"]["protocol"] == "TCP"
    assert doc["start"]["test_start"]["blksize"] == 128 * 1024
    assert len(doc["start"]["cookie"]) == 36
    for interval in doc["intervals"]:
        assert set(interval["sum"]) >= {"start", "end", "seconds", "bytes", "bits_per_second"}
        assert interval["sum"]["end"] > interval["sum"]["start"] >= 0
    sent = doc["end"]["sum_sent"]
    assert set(sent) >= {"start", "end", "seconds", "bytes", "bits_per_second", "sender"}
    assert set(doc["end"]["cpu_utilization_percent"]) >= {"host_total", "remote_total"}


def test_plain_output_has_intervals_and_a_summary(bench_port: int) -> None:
    result = run_cli(
        "bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0.4", "-i", "0.2", "-u"
    )
    assert result.code == 0, result.err
    assert result.out.count(" sec ") >= 3  # an interval or more, sender, receiver
    assert "receiver" in result.out
    assert "datagrams lost" in result.out


def test_server_output_comes_back_to_the_client(bench_port: int) -> None:
    result = run_cli(
        "bench",
        "client",
        "127.0.0.1",
        "-p",
        str(bench_port),
        "-t",
        "0.2",
        "--get-server-output",
    )
    assert result.code == 0, result.err
    assert "Server output:" in result.out
    assert "Accepted connection from 127.0.0.1" in result.out


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack("!II", data[16:24])
    return width, height


@pytest.mark.parametrize("mode", [[], ["--latency", "--depth", "2"]])
def test_plot_is_a_png_of_the_expected_size(
    bench_port: int, tmp_path: Path, mode: list[str]
) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the 'plot' extra)")
    out = tmp_path / "bench.png"
    argv = ["bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0.3", "-i", "0.1"]
    result = run_cli(*argv, *mode, "--plot", str(out))
    assert result.code == 0, result.err
    assert _png_size(out) == (1000, 700)
