"""``socketkit udp-server``: the largest and the empty datagram, floods from many ports."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from faultsupport import LOOPBACK_TIMEOUT, record, running, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.timeout(90)]

#: The largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header).
MAX_UDP = 65507


def _client(timeout: float = LOOPBACK_TIMEOUT) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.settimeout(timeout)
    return s


def test_udp_largest_empty_flood_then_legitimate_client(tmp_path: Path) -> None:
    """Check 7: 65507 bytes and 0 bytes echoed; 20000 datagrams from 100 ports; still answers."""
    argv = ["udp-server", "--host", "127.0.0.1", "-p", "0", "-v", "-q", "--service", "echo"]
    with running(argv, tmp_path) as srv:
        port = srv.port()
        addr = ("127.0.0.1", port)
        fds_before = srv.fds()
        rss_before = srv.rss_kib()
        with _client() as c:
            big = os.urandom(MAX_UDP)
            c.sendto(big, addr)
            assert c.recvfrom(MAX_UDP + 1)[0] == big
            c.sendto(b"", addr)
            assert c.recvfrom(16)[0] == b""
            c.sendto(b"\x00\xff\xfe", addr)
            assert c.recvfrom(16)[0] == b"\x00\xff\xfe"
        # The flood: 100 source ports, 200 datagrams each of random sizes, never read back.
        flooders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(100)]
        sent = 0
        start = time.monotonic()
        for i in range(200):
            payload = os.urandom(1 + (i * 37) % 1400)
            for f in flooders:
                try:
                    f.sendto(payload, addr)
                    sent += 1
                except BlockingIOError:
                    pass
        flood_s = time.monotonic() - start
        for f in flooders:
            f.close()
        # A legitimate client afterwards: answered (with retries, as UDP clients must).
        with _client(0.5) as c:
            answered = False
            for attempt in range(20):
                c.sendto(b"legit %d" % attempt, addr)
                try:
                    while True:
                        data = c.recvfrom(64)[0]
                        if data == b"legit %d" % attempt:
                            answered = True
                            break
                except TimeoutError:
                    continue
                break
            assert answered
        assert srv.fds() == fds_before
        rss_after = srv.rss_kib()
        assert srv.proc.poll() is None
        assert srv.terminate() == 0
        srv.assert_clean_log()
        summary = srv.summary()
    record(
        "7_udp",
        largest_datagram=MAX_UDP,
        flood_datagrams_sent=sent,
        flood_source_ports=100,
        flood_s=round(flood_s, 2),
        server_datagrams_in=summary["datagrams_in"],
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        fds_before=fds_before,
        fds_after=fds_before,
        shutdown_s=round(srv.exit_seconds or 0, 3),
    )
    assert summary["datagrams_in"] >= 4


def test_udp_oversize_dropped_with_reason_and_hello_garbage(tmp_path: Path) -> None:
    """Check 7: a datagram over --max-size is dropped and logged; hello prints garbage safely."""
    argv = ["udp-server", "--host", "127.0.0.1", "-p", "0", "-v", "--max-size", "1024"]
    with running(argv, tmp_path) as srv:
        addr = ("127.0.0.1", srv.port())
        with _client(0.5) as c:
            c.sendto(b"x" * 1025, addr)
            with pytest.raises(TimeoutError):
                c.recvfrom(64)
            for garbage in (b"", b"\x00" * 100, b"\xff\xfe\xed\xa0\x80", os.urandom(1024)):
                c.settimeout(LOOPBACK_TIMEOUT)
                c.sendto(garbage, addr)
                assert c.recvfrom(64)[0] == b"Message received"
        wait_until(lambda: "over 1024 bytes dropped" in srv.err, what="drop logged")
        assert srv.terminate() == 0
        srv.assert_clean_log()
        assert srv.out.count("Received: ") == 4
