"""``socketkit tcp-server``: shutdown and restart, descriptor starvation, stalls, SYN bursts."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest
from faultsupport import (
    LOOPBACK_TIMEOUT,
    closed_by_peer,
    connect,
    echo_roundtrip,
    record,
    running,
    sha,
    stalled_writer,
    tcp_server,
    wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(90)]

MiB = 1024 * 1024


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_in_flight_then_restart_binds(tmp_path: Path) -> None:
    """Check 8: SIGTERM mid-transfer: accepts stop, exchanges finish, exit 0; restart binds."""
    clients, size = 20, 1 * MiB
    drain = 5.0
    args = ["--service", "echo", "--drain-timeout", str(drain)]
    with tcp_server(tmp_path / "first", *args) as srv:
        port = srv.port()
        payloads = [os.urandom(size) for _ in range(clients)]
        socks = [connect(port) for _ in range(clients)]
        received: list[bytearray] = [bytearray() for _ in range(clients)]

        def reader(i: int) -> None:
            while chunk := socks[i].recv(65536):
                received[i] += chunk

        readers = [threading.Thread(target=reader, args=(i,)) for i in range(clients)]
        for t in readers:
            t.start()
        for s, p in zip(socks, payloads, strict=True):
            s.sendall(p[: size // 2])  # half now: every exchange is in flight
        wait_until(lambda: sum(map(len, received)) >= clients * size // 4, what="echo flowing")
        start = time.monotonic()
        srv.proc.send_signal(15)
        wait_until(lambda: _refused(port), what="accepting stopped")
        refused_after = time.monotonic() - start
        for s, p in zip(socks, payloads, strict=True):
            s.sendall(p[size // 2 :])
            s.shutdown(socket.SHUT_WR)
        for t in readers:
            t.join(LOOPBACK_TIMEOUT)
        rc = srv.proc.wait(drain + LOOPBACK_TIMEOUT)
        shutdown_s = time.monotonic() - start
        for s in socks:
            s.close()
        assert rc == 0
        srv.assert_clean_log()
        summary = srv.summary()
        assert [sha(bytes(r)) for r in received] == [sha(p) for p in payloads]
    assert summary["bytes_in"] == summary["bytes_out"] == clients * size
    assert shutdown_s < drain
    # The same port at once: SO_REUSEADDR despite connections the server closed first.
    with running(
        ["tcp-server", "--host", "127.0.0.1", "-p", str(port), "-q", "--service", "echo"],
        tmp_path / "second",
    ) as again:
        assert again.port() == port
        assert echo_roundtrip(port) < LOOPBACK_TIMEOUT
        assert again.terminate() == 0
    record(
        "8_shutdown_drain_tcp",
        in_flight_clients=clients,
        bytes_verified=clients * size,
        refused_after_s=round(refused_after, 3),
        shutdown_s=round(shutdown_s, 3),
        restart_bound=True,
    )


def test_sigterm_drain_timeout_and_framed_restart(tmp_path: Path) -> None:
    """Check 8: a client that never finishes is cut at --drain-timeout; framed idle
    connections are closed by the server first (TIME_WAIT on its side) and the
    restart still binds."""
    drain = 1.0
    args = ["--service", "echo", "--frame", "line", "--drain-timeout", str(drain)]
    with tcp_server(tmp_path / "first", *args) as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(port)
        idle = [connect(port) for _ in range(20)]
        for s in idle:
            s.sendall(b"hi\n")
            assert s.recv(16) == b"hi\n"
        stuck = connect(port)
        stuck.sendall(b"half a line")  # never finished
        wait_until(lambda: srv.fds() == fds_before + 21, what="all connected")
        start = time.monotonic()
        rc = srv.terminate(drain + LOOPBACK_TIMEOUT)
        shutdown_s = time.monotonic() - start
        assert rc == 0
        assert all(closed_by_peer(s, LOOPBACK_TIMEOUT) for s in idle)
        assert closed_by_peer(stuck, LOOPBACK_TIMEOUT)
        for s in [*idle, stuck]:
            s.close()
        srv.assert_clean_log()
        assert "server shut down before the exchange finished" in srv.err
    assert drain <= shutdown_s < drain + 2
    with running(
        ["tcp-server", "--host", "127.0.0.1", "-p", str(port), "-q", "--service", "echo"],
        tmp_path / "second",
    ) as again:
        assert again.port() == port
        assert again.terminate() == 0
    record("8_drain_timeout_tcp", drain_timeout_s=drain, shutdown_s=round(shutdown_s, 3))


def test_out_of_descriptors_backs_off_and_recovers(tmp_path: Path) -> None:
    """Check 9: RLIMIT_NOFILE 64, driven past it: low CPU, old clients served, recovery."""
    with tcp_server(tmp_path, "--service", "echo", nofile=64) as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(port)
        room = 64 - fds_before
        held = [connect(port) for _ in range(room + 40)]  # 40 more than it can take
        wait_until(lambda: srv.fds() == 64, what="descriptors exhausted")
        wait_until(lambda: "pausing accepts" in srv.err, what="back-off logged")
        # Out of descriptors with 40 clients in the backlog and nothing else to
        # do: a back-off wakes up a few times a second, a spinning accept loop
        # burns a whole core.
        cpu_start, wall_start = srv.cpu_seconds(), time.monotonic()
        wait_until(lambda: time.monotonic() - wall_start >= 1.5, what="starved period")
        cpu = srv.cpu_seconds() - cpu_start
        wall = time.monotonic() - wall_start
        # Still out of descriptors: the existing clients are served.
        served = 0
        for s in held[:room]:
            s.sendall(b"still here\n")
            assert s.recv(64) == b"still here\n"
            served += 1
        # Free descriptors: the waiting clients are accepted and served.
        for s in held[:room]:
            s.close()
        for s in held[room:]:
            s.sendall(b"late\n")
            assert s.recv(64) == b"late\n"
        for s in held[room:]:
            s.close()
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        assert srv.terminate() == 0
        srv.assert_clean_log()
        summary = srv.summary()
    record(
        "9_emfile_tcp",
        nofile=64,
        clients=len(held),
        cpu_while_starved_s=round(cpu, 3),
        wall_s=round(wall, 2),
        cpu_share=round(cpu / wall, 3),
        served_while_starved=served,
        fds_before=fds_before,
        fds_after=fds_before,
    )
    assert summary["connections"] == len(held) + 1
    assert cpu / wall < 0.1, f"{cpu:.2f} s CPU in {wall:.2f} s while out of descriptors"


def test_client_that_never_reads_is_released(tmp_path: Path) -> None:
    """Check 9: a client sending to echo but never reading stalls the server's writes: idle."""
    idle = 1.0
    with tcp_server(tmp_path, "--service", "echo", "--idle-timeout", str(idle)) as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(port)
        sent, stalled_at, released = stalled_writer(srv, port, fds_before, idle + 8)
        assert released is not None, "the stalled client was never released"
        assert stalled_at is not None, f"never stalled ({sent} bytes sent)"
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        assert srv.terminate() == 0
        srv.assert_clean_log()
        assert f"idle for more than {idle:g} s" in srv.err
    record(
        "9_write_stall_tcp",
        idle_timeout_s=idle,
        sent_before_stall=sent,
        released_after_stall_s=round(released - stalled_at, 2),
    )
    assert released - stalled_at < idle + 2


def _listen_drops() -> int:
    """TcpExt ListenOverflows + ListenDrops, system-wide (/proc/net/netstat)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
            return table["ListenOverflows"] + table["ListenDrops"]
    return 0


def test_burst_of_a_thousand_connects(tmp_path: Path) -> None:
    """Check 9: 1000 simultaneous connects, default backlog: no drops, every one served."""
    n = 1000
    with tcp_server(tmp_path, "--service", "echo") as srv:
        port = srv.port()
        fds_before = srv.baseline_fds(port)
        drops_before = _listen_drops()
        socks = []
        start = time.monotonic()
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
        connected = 0
        deadline = time.monotonic() + LOOPBACK_TIMEOUT
        while connected < n and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                sel.unregister(sock)
                connected += 1
        sel.close()
        connect_s = time.monotonic() - start
        assert connected == n
        for s in socks:
            s.setblocking(True)
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(b"burst\n")
        for s in socks:
            assert s.recv(16) == b"burst\n"
            s.close()
        serve_s = time.monotonic() - start
        drops = _listen_drops() - drops_before
        wait_until(lambda: srv.fds() == fds_before, what="fds back to baseline")
        assert srv.terminate() == 0
        srv.assert_clean_log()
        summary = srv.summary()
    record(
        "9_syn_burst_tcp",
        connects=n,
        connect_s=round(connect_s, 3),
        all_served_s=round(serve_s, 3),
        listen_drops_delta=drops,
        peak_active=summary["peak_active"],
        fds_before=fds_before,
        fds_after=fds_before,
    )
    assert summary["connections"] == n + 1
    assert drops == 0
