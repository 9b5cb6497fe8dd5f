"""``socketkit tcp-server`` under faults and bad input, started as users start it.

Each test is one check of issue #5, bounded in count and time (sizes are
chosen for a shared 2-core machine), and asserts on the server's ``-v`` log
and its ``summary:`` line as well as on what the clients saw.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import time
from pathlib import Path

import pytest
from faultsupport import (
    LOOPBACK_TIMEOUT,
    closed_by_peer,
    connect,
    connect_and_close,
    echo_load,
    echo_roundtrip,
    half_close_echo,
    read_until_eof,
    record,
    resets_mid_stream,
    sha,
    slow_reader,
    tcp_server,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(90)]

MiB = 1024 * 1024


def test_integrity_under_load(tmp_path: Path) -> None:
    """Check 1: 200 connections x 1 MiB echoed concurrently, every byte hashed."""
    conns, size = 200, 1 * MiB
    with tcp_server(tmp_path, "--service", "echo") as srv:
        fds_before = srv.baseline_fds(srv.port())
        start = time.monotonic()
        results = echo_load(srv.port(), conns, size, seed=5)
        elapsed = time.monotonic() - start
        assert [n for n, _ in results] == [size] * conns, "bytes lost or duplicated"
        assert all(ok for _, ok in results), "bytes reordered or corrupted"
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        hwm = srv.hwm_kib()
        assert srv.terminate() == 0
        summary = srv.summary()
        srv.assert_clean_log()
    assert summary["connections"] == conns + 1  # and the warm-up
    assert summary["bytes_in"] == summary["bytes_out"] == conns * size + 2
    assert summary["errors"] == 0
    record(
        "1_integrity_tcp",
        connections=conns,
        bytes_verified=conns * size,
        seconds=round(elapsed, 2),
        vmhwm_kib=hwm,
        fds_before=fds_before,
        fds_after=fds_before,
        shutdown_s=round(srv.exit_seconds or 0, 3),
    )


def test_slow_reader_memory_bounded_others_served(tmp_path: Path) -> None:
    """Check 2: 32 MiB sent to echo by a client reading at ~12 MiB/s; others stay prompt."""
    size = 32 * MiB
    payload = os.urandom(size)
    with tcp_server(tmp_path, "--service", "echo") as srv:
        port = srv.port()
        echo_roundtrip(port)
        rss_before, peak_rss, worst_latency = slow_reader(srv, port, payload)
        hwm = srv.hwm_kib()
        assert srv.terminate() == 0
        srv.assert_clean_log()
        summary = srv.summary()
    growth_mib = (peak_rss - rss_before) / 1024
    record(
        "2_slow_reader_tcp",
        bytes_verified=size,
        rss_before_kib=rss_before,
        rss_peak_kib=peak_rss,
        vmhwm_kib=hwm,
        growth_mib=round(growth_mib, 1),
        worst_other_latency_s=round(worst_latency, 3),
    )
    assert summary["bytes_out"] >= size
    assert growth_mib < 8, f"server buffered {growth_mib:.1f} MiB for one slow reader"
    assert worst_latency < 1.0


def test_slowloris_then_idle_timeout(tmp_path: Path) -> None:
    """Check 3: 300 connections trickle a byte at a time; normal clients served; idle ones closed."""
    n, idle = 300, 1.5
    args = [
        "--service",
        "echo",
        "--frame",
        "line",
        "--max-line",
        "4096",
        "--idle-timeout",
        str(idle),
    ]
    with tcp_server(tmp_path, *args) as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(srv.port())
        lorises = [connect(port) for _ in range(n)]
        worst = 0.0
        start = time.monotonic()
        rounds = 0
        # Trickle one byte per connection per round for longer than the idle timeout:
        # trickling is activity, so none of them may be dropped yet.
        while time.monotonic() - start < 2 * idle:
            for s in lorises:
                s.send(b"x")
            rounds += 1
            worst = max(worst, echo_roundtrip(port, b"normal client\n"))
        assert all(not closed_by_peer(s, 0.0) for s in lorises[:5])
        assert srv.fds() >= fds_before + n
        # Now they stall: every one must be closed by the idle sweep.
        stalled = time.monotonic()
        wait_until(lambda: srv.fds() == fds_before, idle + 5, "idle connections closed")
        closed_after = time.monotonic() - stalled
        assert all(closed_by_peer(s, LOOPBACK_TIMEOUT) for s in lorises)
        for s in lorises:
            s.close()
        worst = max(worst, echo_roundtrip(port, b"after\n"))
        assert srv.terminate() == 0
        srv.assert_clean_log()
        assert srv.err.count(f"idle for more than {idle:g} s") == n
    record(
        "3_slowloris_tcp",
        connections=n,
        trickle_rounds=rounds,
        worst_normal_latency_s=round(worst, 3),
        idle_timeout_s=idle,
        closed_after_s=round(closed_after, 2),
        fds_before=fds_before,
        fds_after=fds_before,
    )
    assert worst < 1.0
    assert closed_after < idle + 2


def test_flood_past_max_conns_no_leak(tmp_path: Path) -> None:
    """Check 4: 400 connections against --max-conns 100: served in turn, fds back to baseline."""
    limit, n = 100, 400
    args = ["--service", "echo", "--max-conns", str(limit), "--backlog", "1024"]
    with tcp_server(tmp_path, *args) as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(srv.port())
        flood = [connect(port) for _ in range(n)]
        for s in flood:
            s.sendall(b"hello\n")
        # The first `limit` are served now; the others wait in the backlog.
        for s in flood[:limit]:
            assert s.recv(64) == b"hello\n"
        wait_until(lambda: srv.fds() == fds_before + limit, what="max-conns served")
        peak_fds = srv.fds()
        # Served ones leave; the waiting ones are admitted and answered in turn.
        for i, s in enumerate(flood):
            if i >= limit:
                assert s.recv(64) == b"hello\n"
            s.close()
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        fds_after = srv.fds()
        latency = echo_roundtrip(port)
        assert srv.terminate() == 0
        srv.assert_clean_log()
        summary = srv.summary()
    record(
        "4_flood_tcp",
        connections=n,
        max_conns=limit,
        peak_active=summary["peak_active"],
        fds_before=fds_before,
        fds_peak=peak_fds,
        fds_after=fds_after,
        latency_after_s=round(latency, 3),
    )
    assert summary["peak_active"] <= limit
    assert summary["connections"] == n + 2
    assert peak_fds <= fds_before + limit


def test_abrupt_endings(tmp_path: Path) -> None:
    """Check 5: resets mid-stream, half-close then read the rest, 3000 connect-and-close."""
    with tcp_server(tmp_path, "--service", "echo") as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(srv.port())
        # Resets mid-stream: 100 connections each with 256 KiB in flight, then RST.
        resets_mid_stream(port, 100)
        # Half-close then read the rest: every byte comes back, then EOF.
        payload = os.urandom(2 * MiB)
        assert sha(half_close_echo(port, payload)) == sha(payload)
        # Half-close with the echo still queued in the server (the client has a
        # tiny receive buffer and reads only after its end of stream): the rest
        # must still come, then EOF - not a reset that throws it away.
        rest = os.urandom(256 * 1024)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(LOOPBACK_TIMEOUT)
        s.connect(("127.0.0.1", port))
        with s:
            s.sendall(rest)
            s.shutdown(socket.SHUT_WR)
            assert sha(read_until_eof(s)) == sha(rest)
        # Connect-and-close, plain and with a reset, thousands of times.
        connect_and_close(port, 3000)
        latency = echo_roundtrip(port)
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        hwm = srv.hwm_kib()
        assert srv.terminate() == 0
        srv.assert_clean_log()
        summary = srv.summary()
    record(
        "5_abrupt_tcp",
        resets_mid_stream=100,
        half_close_bytes_verified=len(payload),
        connect_close=3000,
        fds_before=fds_before,
        fds_after=fds_before,
        vmhwm_kib=hwm,
        latency_after_s=round(latency, 3),
        errors=summary["errors"],
    )
    assert summary["connections"] == 1 + 100 + 2 + 3000 + 1


def test_oversize_line_and_garbage(tmp_path: Path) -> None:
    """Check 6 (line): 8 MiB without a newline, NUL bytes, invalid UTF-8, random binary."""
    args = ["--service", "echo", "--frame", "line", "--max-line", "1024"]
    with tcp_server(tmp_path, *args) as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(srv.port())
        rss_before = srv.rss_kib()
        # A line longer than --max-line that never ends: closed, memory flat.
        with connect(port) as bad:
            sent = 0
            try:
                for _ in range(128):
                    bad.sendall(b"A" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert closed_by_peer(bad, LOOPBACK_TIMEOUT)
        # NUL bytes and invalid UTF-8 are just bytes in a line: echoed unchanged.
        for line in (b"\x00" * 1000, b"\xff\xfe\xc3\x28 \xed\xa0\x80", b"\x00\xff\rmid"):
            assert echo_roundtrip(port, line + b"\n") < LOOPBACK_TIMEOUT
        # Random binary: echoed line by line or closed for a too-long line, never a crash.
        rng = random.Random(6)
        for _ in range(50):
            with connect(port) as s:
                s.sendall(rng.randbytes(rng.randint(1, 8192)))
                s.shutdown(socket.SHUT_WR)
                with contextlib.suppress(ConnectionResetError):
                    read_until_eof(s)
        latency = echo_roundtrip(port, b"still served\n")
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        rss_after = srv.rss_kib()
        hwm = srv.hwm_kib()
        assert srv.terminate() == 0
        srv.assert_clean_log()
        err = srv.err
    assert "closed: peer broke framing: line longer than 1024 bytes" in err
    record(
        "6_oversize_line_tcp",
        oversize_sent_bytes=sent,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        vmhwm_kib=hwm,
        fds_before=fds_before,
        fds_after=fds_before,
        latency_after_s=round(latency, 3),
    )
    assert sent < 8 * MiB, "the server kept reading an oversize line"
    assert hwm - rss_before < 8 * 1024


def test_oversize_frame_header_and_garbage(tmp_path: Path) -> None:
    """Check 6 (u32): a header claiming 4 GiB, random binary; hello survives garbage too."""
    args = ["--service", "echo", "--frame", "u32", "--max-line", "65536"]
    with tcp_server(tmp_path, *args) as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(srv.port())
        rss_before = srv.rss_kib()
        with connect(port) as bad:
            bad.sendall(struct.pack("!I", 0xFFFFFFFF) + b"tiny")
            assert closed_by_peer(bad, LOOPBACK_TIMEOUT)
        rng = random.Random(66)
        for _ in range(50):
            with connect(port) as s:
                s.sendall(b"\xff" + rng.randbytes(rng.randint(3, 4096)))
                assert closed_by_peer(s, LOOPBACK_TIMEOUT)
        body = b"\x00\xff framed"
        assert echo_roundtrip(port, struct.pack("!I", len(body)) + body) < LOOPBACK_TIMEOUT
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        hwm = srv.hwm_kib()
        assert srv.terminate() == 0
        srv.assert_clean_log()
        err = srv.err
    assert "frame header announces 4294967295 bytes, over the limit of 65536" in err
    assert err.count("closed: peer broke framing") == 51
    record(
        "6_oversize_frame_tcp",
        rss_before_kib=rss_before,
        vmhwm_kib=hwm,
        fds_before=fds_before,
        fds_after=fds_before,
    )
    assert hwm - rss_before < 8 * 1024


def test_hello_service_survives_garbage(tmp_path: Path) -> None:
    """Check 6 (hello): NUL bytes, invalid UTF-8 and binary printed as text, never a crash."""
    with tcp_server(tmp_path, quiet=False) as srv:
        port = srv.port()
        rng = random.Random(7)
        for message in [b"\x00" * 100, b"\xff\xfe\xfd", b"\xed\xa0\x80\n", rng.randbytes(1023)]:
            with connect(port) as s:
                s.sendall(message)
                reply = s.recv(64)
                assert reply.startswith(b"Hello from server")
        assert srv.terminate() == 0
        srv.assert_clean_log()
