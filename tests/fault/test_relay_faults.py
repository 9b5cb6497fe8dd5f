"""``socketkit relay tcp-listen:...,fork tcp:...`` in front of an echo server, under faults.

The relay is started as users start it (``-v`` prints its listening line)
in front of a ``socketkit tcp-server --service echo``; the figures are the
relay's own (/proc of the relay process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from faultsupport import (
    LOOPBACK_TIMEOUT,
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
    stalled_writer,
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


def test_relay_slow_reader_memory_bounded(tmp_path: Path) -> None:
    """Check 2 (relay): 32 MiB through the relay to a reader at ~12 MiB/s: memory flat."""
    size = 32 * MiB
    payload = os.urandom(size)
    with relay_to_echo(tmp_path) as (relay, port):
        echo_roundtrip(port)
        rss_before, peak, worst = slow_reader(relay, port, payload)
        relay.assert_clean_log()
    growth = (peak - rss_before) / 1024
    record(
        "2_slow_reader_relay",
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


def _threads(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split("Threads:")[1].split()[0])


#: Connections opened at once per batch (the listen backlog takes the burst).
_BATCH = 500


async def _open_echoed(port: int, n: int) -> list[asyncio.StreamWriter]:
    """``n`` connections through the relay, each with one byte echoed; kept open."""

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        return writer

    writers: list[asyncio.StreamWriter] = []
    for start in range(0, n, _BATCH):
        batch = [one() for _ in range(min(_BATCH, n - start))]
        writers += await asyncio.wait_for(asyncio.gather(*batch), LOOPBACK_TIMEOUT * 3)
    return writers


async def _close_all(writers: list[asyncio.StreamWriter]) -> None:
    for i, writer in enumerate(writers):
        if i % 2:  # every other one with a reset
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        writer.close()
    for writer in writers:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def test_relay_2000_concurrent_connections(tmp_path: Path) -> None:
    """Check 10 (relay): 2000 relayed connections at once: no thread growth, every
    descriptor and (nearly) all memory back once they close, served at once after."""
    n = 2000
    with relay_to_echo(tmp_path) as (relay, port):
        fds_before = relay.baseline_fds(port)
        rss_before = relay.rss_kib()
        threads_before = _threads(relay.pid)

        async def scenario() -> tuple[int, int, int]:
            writers = await _open_echoed(port, n)
            peak = (relay.fds(), relay.rss_kib(), _threads(relay.pid))
            await _close_all(writers)
            return peak

        fds_peak, rss_peak, threads_peak = asyncio.run(scenario())
        wait_until(lambda: relay.fds() == fds_before, 20, what="relay fds back to baseline")
        latency = echo_roundtrip(port)
        rss_after = relay.rss_kib()
        relay.assert_clean_log()
    record(
        "10_concurrent_2000_relay",
        connections=n,
        fds_before=fds_before,
        fds_peak=fds_peak,
        fds_after=fds_before,
        threads_before=threads_before,
        threads_peak=threads_peak,
        rss_before_kib=rss_before,
        rss_peak_kib=rss_peak,
        rss_after_kib=rss_after,
        kib_per_relayed_conn=round((rss_peak - rss_before) / n, 2),
        latency_after_s=round(latency, 3),
    )
    assert fds_peak == fds_before + 2 * n  # the client's socket and its upstream, each
    assert threads_peak == threads_before
    assert rss_after - rss_before < n * 4, "more memory kept than the connections used"
    assert latency < 1.0


def test_relay_flood_of_5000_then_serves_at_once(tmp_path: Path) -> None:
    """Check 4b (relay): 5000 connections opened through the relay and closed (half
    with resets), twice: a new connection is served at once, every descriptor is
    back, and the second flood costs no more memory than the first (nothing leaks:
    what the first one freed is reused)."""
    n = 5000
    with relay_to_echo(tmp_path) as (relay, port):
        fds_before = relay.baseline_fds(port)
        rss_before = relay.rss_kib()

        async def flood() -> int:
            writers = await _open_echoed(port, n)
            fds = relay.fds()
            await _close_all(writers)
            return fds

        rss_after = []
        latencies = []
        for _ in range(2):
            fds_peak = asyncio.run(flood())
            latencies.append(echo_roundtrip(port))
            wait_until(lambda: relay.fds() == fds_before, 30, what="relay fds back to baseline")
            rss_after.append(relay.rss_kib())
        relay.assert_clean_log()
    record(
        "4b_flood_5000_relay",
        connections=n,
        floods=2,
        fds_before=fds_before,
        fds_peak=fds_peak,
        fds_after=fds_before,
        rss_before_kib=rss_before,
        rss_after_first_kib=rss_after[0],
        rss_after_second_kib=rss_after[1],
        latency_after_s=[round(x, 3) for x in latencies],
    )
    assert fds_peak == fds_before + 2 * n
    assert max(latencies) < 1.0
    # The allocators keep part of what 5000 connections used (about 3.7 KiB
    # each) for the next burst; a leak would show as growth on the second flood.
    assert rss_after[0] - rss_before < n * 4, "more memory kept than the connections used"
    assert rss_after[1] - rss_after[0] < 4 * 1024, "the second flood grew RSS: a leak"


def test_relay_client_that_never_reads_is_released(tmp_path: Path) -> None:
    """Check 9 (relay): a client that sends but never reads stalls the relay's writes:
    with --idle-timeout that counts as idle and both of its sockets are released."""
    idle = 1.0
    with relay_to_echo(tmp_path, "--idle-timeout", str(idle)) as (relay, port):
        fds_before = relay.baseline_fds(port)
        sent, stalled_at, released = stalled_writer(relay, port, fds_before, idle + 8)
        assert released is not None, "the stalled client was never released"
        assert stalled_at is not None, f"never stalled ({sent} bytes sent)"
        wait_until(lambda: relay.fds() == fds_before, what="relay fds back to baseline")
        relay.assert_clean_log()
        assert f"idle for more than {idle:g} s" in relay.err
    record(
        "9_write_stall_relay",
        idle_timeout_s=idle,
        sent_before_stall=sent,
        released_after_stall_s=round(released - stalled_at, 2),
    )
    assert released - stalled_at < idle + 2
