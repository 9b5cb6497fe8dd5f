"""The bench's figures against loads whose answer is known."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from socketkit.bench import BenchConfig, Histogram, run_bench
from socketkit.bench._server import _UdpStats

from helpers import run_cli

pytestmark = pytest.mark.timeout(30)

#: A paced sender must land within this fraction of its target rate.
RATE_TOLERANCE = 0.10


def test_rate_limited_tcp_gives_the_target_throughput(bench_port: int) -> None:
    target = 40e6
    doc = run_bench(
        BenchConfig(port=bench_port, duration=1.0, bitrate=target, length=16384, interval=0.25)
    )
    forward = doc["summary"]["forward"]
    for side in ("sender", "receiver"):
        rate = forward[side]["bits_per_second"]
        assert abs(rate - target) / target < RATE_TOLERANCE, (side, rate)
    assert forward["sender"]["bytes"] == forward["receiver"]["bytes"]
    assert len(doc["intervals"]) >= 3


def test_udp_seeded_loss_is_reported_exactly(bench_port: int) -> None:
    doc = run_bench(
        BenchConfig(
            port=bench_port,
            mode="udp",
            duration=0.5,
            bitrate=5e6,
            simulate_loss=0.1,
            seed=3,
        )
    )
    udp = doc["udp"]
    assert udp["skipped_on_purpose"] > 10
    assert udp["lost"] == udp["skipped_on_purpose"]
    assert udp["lost_percent"] == pytest.approx(100 * udp["lost"] / udp["packets"])
    assert udp["out_of_order"] == 0
    target = 5e6
    rate = doc["summary"]["forward"]["sender"]["bits_per_second"]
    # The skipped datagrams are not sent: the rate is the target less the loss.
    assert abs(rate - target * 0.9) / target < RATE_TOLERANCE * 1.5


def test_reverse_and_bidir_move_data_both_ways(bench_port: int) -> None:
    rev = run_bench(BenchConfig(port=bench_port, duration=0.3, reverse=True, streams=2))
    assert set(rev["summary"]) == {"reverse"}
    assert rev["summary"]["reverse"]["receiver"]["bytes"] > 0
    both = run_bench(BenchConfig(port=bench_port, duration=0.3, bidir=True))
    assert set(both["summary"]) == {"forward", "reverse"}
    for d in both["summary"].values():
        assert d["sender"]["bytes"] == d["receiver"]["bytes"] > 0


def test_several_processes_share_the_streams(bench_port: int) -> None:
    doc = run_bench(BenchConfig(port=bench_port, duration=0.3, streams=2, procs=2))
    assert doc["client"]["processes"] == 2
    forward = doc["summary"]["forward"]
    assert forward["sender"]["bytes"] == forward["receiver"]["bytes"] > 0


def test_latency_percentiles_are_ordered(bench_port: int) -> None:
    doc = run_bench(BenchConfig(port=bench_port, mode="latency", duration=0.3, streams=2, depth=4))
    lat = doc["latency"]
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
    assert hist.count == 10_001 and hist.max == 20_000_000
    assert Histogram.from_counts(hist.to_counts()).percentile(50) == hist.percentile(50)


def test_udp_stats_count_reordering_and_jitter_as_iperf() -> None:
    stats = _UdpStats()
    # Sequence 1 2 4 3 5: 3 arrives late (out of order), nothing lost in the end.
    for seq in (1, 2, 4, 3, 5):
        stats.add(seq, sent_ns=seq * 1000, arrival_ns=seq * 1000 + 500, size=100)
    assert (stats.out_of_order, stats.lost, stats.highest) == (1, 0, 5)
    assert stats.jitter_ns == 0  # constant transit time: no jitter
    stats = _UdpStats()
    stats.add(1, 0, 100, 10)
    stats.add(2, 1000, 1260, 10)  # transit 100 then 260: D = 160
    assert stats.jitter_ns == pytest.approx(160 / 16)


def test_json_output_schema(bench_port: int) -> None:
    result = run_cli("bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0.3", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["version"] == 1 and doc["tool"] == "socketkit bench"
    assert doc["params"]["mode"] == "tcp" and doc["params"]["length"] == 128 * 1024
    for interval in doc["intervals"]:
        assert set(interval) >= {"start", "end", "bytes", "bits_per_second", "streams"}
        assert interval["end"] > interval["start"] >= 0
    side = doc["summary"]["forward"]["sender"]
    assert set(side) == {"bytes", "seconds", "bits_per_second"}
    assert isinstance(doc["client"]["cpu_percent"], list)


def test_plain_output_has_intervals_and_a_table(bench_port: int) -> None:
    result = run_cli(
        "bench", "client", "127.0.0.1", "-p", str(bench_port), "-t", "0.4", "-i", "0.2", "-u"
    )
    assert result.code == 0, result.err
    assert result.out.count(" s]") >= 2
    assert "receiver" in result.out and "datagrams lost" in result.out


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


def test_refused_connection_is_one_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        result = run_cli("bench", "client", "127.0.0.1", "-p", str(port), "-t", "0.1")
    assert result.code == 3
    assert result.err.count("\n") == 1 and "refused" in result.err
