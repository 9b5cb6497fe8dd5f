"""``socketkit relay tcp-listen:...,fork tcp:...`` in front of an echo server, under faults.

The relay is started as users start it (``-v`` prints its listening line)
in front of a ``socketkit tcp-server --service echo``; the figures are the
relay's own (/proc of the relay process).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from faultsupport import (
    Proc,
    connect,
    connect_and_close,
    echo_load,
    echo_roundtrip,
    half_close_echo,
    record,
    resets_mid_stream,
    running,
    sha,
    slow_reader,
    tcp_server,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(90)]

MiB = 1024 * 1024


@contextmanager
def relay_to_echo(
    tmp_path: Path, *options: str, nofile: int | None = None
) -> Iterator[tuple[Proc, int]]:
    """An echo server and a forking relay in front of it; yields (relay, relay port)."""
    with tcp_server(tmp_path / "echo", "--service", "echo") as echo:
        argv = [
            "relay",
            "-v",
            *options,
            "tcp-listen:127.0.0.1:0,fork",
            f"tcp:127.0.0.1:{echo.port()}",
        ]
        with running(argv, tmp_path / "relay", nofile) as relay:
            yield relay, relay.port()


def test_relay_integrity_under_load(tmp_path: Path) -> None:
    """Check 1 (relay): 100 connections x 1 MiB through the relay, every byte hashed."""
    conns, size = 100, 1 * MiB
    with relay_to_echo(tmp_path) as (relay, port):
        fds_before = relay.baseline_fds(port)
        start = time.monotonic()
        results = echo_load(port, conns, size, seed=51)
        elapsed = time.monotonic() - start
        assert all(ok for _, ok in results)
        wait_until(lambda: relay.fds() == fds_before, what="relay fds back to baseline")
        hwm = relay.hwm_kib()
        relay.assert_clean_log()
        assert relay.terminate() in (0, 130, 143, -15)
        relay.assert_clean_log()
    record(
        "1_integrity_relay",
        connections=conns,
        bytes_verified=conns * size,
        seconds=round(elapsed, 2),
        vmhwm_kib=hwm,
        fds_before=fds_before,
        fds_after=fds_before,
        shutdown_s=round(relay.exit_seconds or 0, 3),
    )


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "portable"])
def test_relay_slow_reader_memory_bounded(tmp_path: Path, splice: bool) -> None:
    """Check 2 (relay): 32 MiB through the relay to a reader at ~12 MiB/s: memory flat."""
    size = 32 * MiB
    payload = os.urandom(size)
    options = ["--splice"] if splice else []
    with relay_to_echo(tmp_path, *options) as (relay, port):
        echo_roundtrip(port)
        rss_before, peak, worst = slow_reader(relay, port, payload)
        relay.assert_clean_log()
    growth = (peak - rss_before) / 1024
    record(
        f"2_slow_reader_relay_{'splice' if splice else 'portable'}",
        bytes_verified=size,
        rss_before_kib=rss_before,
        rss_peak_kib=peak,
        growth_mib=round(growth, 1),
        worst_other_latency_s=round(worst, 3),
    )
    assert growth < 8
    assert worst < 1.0


def test_relay_abrupt_endings(tmp_path: Path) -> None:
    """Check 5 (relay): resets mid-stream, half-close then the rest, 1000 connect-and-close."""
    with relay_to_echo(tmp_path) as (relay, port):
        fds_before = relay.baseline_fds(port)
        resets_mid_stream(port, 50)
        payload = os.urandom(2 * MiB)
        assert sha(half_close_echo(port, payload)) == sha(payload)
        connect_and_close(port, 1000)
        latency = echo_roundtrip(port)
        wait_until(lambda: relay.fds() == fds_before, 20, what="relay fds back to baseline")
        relay.assert_clean_log()
        hwm = relay.hwm_kib()
    record(
        "5_abrupt_relay",
        resets_mid_stream=50,
        half_close_bytes_verified=len(payload),
        connect_close=1000,
        fds_before=fds_before,
        fds_after=fds_before,
        vmhwm_kib=hwm,
        latency_after_s=round(latency, 3),
    )


def test_relay_flood_past_max_conns(tmp_path: Path) -> None:
    """Check 4 (relay): 150 connections against -m 50: served in turn, fds back to baseline."""
    limit, n = 50, 150
    with relay_to_echo(tmp_path, "-m", str(limit)) as (relay, port):
        fds_before = relay.baseline_fds(port)
        flood = [connect(port) for _ in range(n)]
        for s in flood:
            s.sendall(b"hello\n")
        for s in flood[:limit]:
            assert s.recv(64) == b"hello\n"
        peak = relay.fds()
        for i, s in enumerate(flood):
            if i >= limit:
                assert s.recv(64) == b"hello\n"
            s.close()
        wait_until(lambda: relay.fds() == fds_before, what="relay fds back to baseline")
        relay.assert_clean_log()
    record(
        "4_flood_relay",
        connections=n,
        max_conns=limit,
        fds_before=fds_before,
        fds_peak=peak,
        fds_after=fds_before,
    )


def test_relay_out_of_descriptors_backs_off_and_recovers(tmp_path: Path) -> None:
    """Check 9 (relay): RLIMIT_NOFILE 48 and more clients than that: it stays up, recovers."""
    with relay_to_echo(tmp_path, nofile=48) as (relay, port):
        fds_before = relay.baseline_fds(port)
        held = [connect(port) for _ in range(40)]
        wait_until(lambda: "pausing accepts" in relay.err, what="back-off logged")
        cpu_start, wall_start = relay.cpu_seconds(), time.monotonic()
        wait_until(lambda: time.monotonic() - wall_start >= 1.5, what="starved period")
        cpu = relay.cpu_seconds() - cpu_start
        wall = time.monotonic() - wall_start
        assert relay.proc.poll() is None, relay.err[-2000:]
        for s in held:
            s.close()
        wait_until(lambda: relay.fds() == fds_before, 20, what="relay fds back to baseline")
        latency = echo_roundtrip(port)
        relay.assert_clean_log()
    record(
        "9_emfile_relay",
        nofile=48,
        clients=len(held),
        cpu_while_starved_s=round(cpu, 3),
        cpu_share=round(cpu / wall, 3),
        fds_before=fds_before,
        fds_after=fds_before,
        latency_after_s=round(latency, 3),
    )
    assert cpu / wall < 0.1
