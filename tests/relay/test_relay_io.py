"""socketkit relay over loopback: fork, half-close, bounded memory, the engine's options, UDP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time

import pytest
from relaysupport import LOOPBACK_TIMEOUT, recv_all, run, running, sha, sk

from helpers import start_server

pytestmark = pytest.mark.timeout(60)

PAYLOAD = os.urandom(4 << 20)


def test_relay_fork_many_clients() -> None:
    with running(sk("listen", "-v", "-k", "127.0.0.1", "0", "-e", "cat")) as upstream:
        up = upstream.port()
        with running(
            sk("relay", "-v", "tcp-listen:127.0.0.1:0,fork", f"tcp:127.0.0.1:{up}")
        ) as relay:
            port = relay.port()
            results: dict[int, bool] = {}

            def client(i: int) -> None:
                data = PAYLOAD[i:] + bytes([i])
                done = run(sk("connect", "127.0.0.1", str(port)), data, timeout=30)
                results[i] = done.returncode == 0 and sha(done.stdout) == sha(data)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(40)
            assert results == {0: True, 1: True, 2: True, 3: True}
            relay.wait_err(r"(closed \(\d+ bytes in, \d+ out\)[\s\S]*){4}")
            relay.terminate()
            assert re.search(r"summary: connections 4,", relay.err_text), relay.err_text


def test_relay_half_close_both_ways() -> None:
    """A client's FIN reaches the upstream; the upstream's reply still comes back."""
    with socket.socket() as up:
        up.bind(("127.0.0.1", 0))
        up.listen()
        up_port = up.getsockname()[1]
        with running(sk("relay", "-v", "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{up_port}")) as r:
            port = r.port()
            with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
                c.sendall(b"question")
                c.shutdown(socket.SHUT_WR)
                conn, _ = up.accept()
                with conn:
                    assert recv_all(conn) == b"question"  # the FIN came through
                    conn.sendall(b"answer after your EOF")
                    conn.shutdown(socket.SHUT_WR)
                    assert recv_all(c) == b"answer after your EOF"
            assert r.wait() == 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_relay_memory_bounded_under_slow_reader() -> None:
    """Upstream never reads: the relay must stop reading from the client, not buffer."""
    with socket.socket() as up:
        up.bind(("127.0.0.1", 0))
        up.listen()
        up_port = up.getsockname()[1]
        with running(sk("relay", "-v", "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{up_port}")) as r:
            port = r.port()
            before = _rss_kib(r.proc.pid)
            c = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            conn, _ = up.accept()
            sent = 0
            chunk = b"x" * 65536
            c.setblocking(False)
            deadline = time.monotonic() + 5
            stalled_since = None
            # Push until the whole path is full (sends stop succeeding for 0.5 s).
            while time.monotonic() < deadline:
                try:
                    sent += c.send(chunk)
                    stalled_since = None
                except BlockingIOError:
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > 0.5:
                        break
                    time.sleep(0.01)
            growth = _rss_kib(r.proc.pid) - before
            c.close()
            conn.close()
    assert sent < 256 << 20, "the relay kept accepting data: it buffers without bound"
    assert growth < 16 * 1024, f"relay RSS grew by {growth} KiB with a stalled reader"


@pytest.mark.parametrize("flags", [["--deny", "127.0.0.0/8"], ["--allow", "10.0.0.0/8"]])
def test_tcp_server_allow_deny(flags: list[str]) -> None:
    """tcp-server takes --allow/--deny through the engine's accept_filter hook."""
    with start_server("tcp-server", "--host", "127.0.0.1", "-p", "0", *flags) as server:
        port = server.port()
        # Closed at once, maybe with a reset: refused either way.
        with (
            socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c,
            contextlib.suppress(ConnectionResetError),
        ):
            assert recv_all(c) == b""
        server.terminate()
        assert "refused" in server.out + server.err


def _echo_upstream() -> tuple[socket.socket, threading.Thread]:
    """A loopback TCP echo server in a thread, one thread per client; stops when closed."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept_loop() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = srv.accept()
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    return srv, thread


def test_relay_idle_timeout_and_json_log() -> None:
    """--idle-timeout closes a silent relayed connection; --log-format json logs it as JSON."""
    srv, _ = _echo_upstream()
    with srv:
        up = srv.getsockname()[1]
        argv = ["relay", "-v", "--log-format", "json", "--idle-timeout", "0.5"]
        with running(sk(*argv, "tcp-listen:127.0.0.1:0,fork", f"tcp:127.0.0.1:{up}")) as r:
            port = r.port()
            with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
                c.sendall(b"ping")
                assert c.recv(16) == b"ping"
                start = time.monotonic()
                assert recv_all(c) == b""  # closed by the relay, not by us
                assert time.monotonic() - start < LOOPBACK_TIMEOUT
            r.wait_err(r"idle for more than 0.5 s")
            r.terminate()
        events = [json.loads(line) for line in r.err_text.splitlines() if line.startswith("{")]
        kinds = {e["event"] for e in events}
        assert {"listening", "closed", "summary"} <= kinds, kinds


def test_relay_max_conns_serves_in_turn() -> None:
    """-m 1: the second client waits in the backlog until the first is done."""
    srv, _ = _echo_upstream()
    with srv:
        up = srv.getsockname()[1]
        argv = ["relay", "-v", "-m", "1", "tcp-listen:127.0.0.1:0,fork", f"tcp:127.0.0.1:{up}"]
        with running(sk(*argv)) as r:
            port = r.port()
            first = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            first.sendall(b"one")
            assert first.recv(16) == b"one"
            second = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            second.sendall(b"two")
            second.settimeout(0.3)
            with pytest.raises(TimeoutError):
                second.recv(16)  # not accepted yet
            first.close()
            second.settimeout(LOOPBACK_TIMEOUT)
            assert second.recv(16) == b"two"
            second.close()


def test_udp_fork_gives_each_client_its_own_upstream() -> None:
    """udp-listen,fork: replies go back to the right client; idle upstreams are reclaimed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
        up.bind(("127.0.0.1", 0))
        up.settimeout(LOOPBACK_TIMEOUT)
        up_port = up.getsockname()[1]
        argv = ["relay", "-v", "--idle-timeout", "0.5"]
        with running(sk(*argv, "udp-listen:127.0.0.1:0,fork", f"udp:127.0.0.1:{up_port}")) as r:
            port = r.port()
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
            sources = set()
            try:
                for i, c in enumerate(clients):
                    c.settimeout(LOOPBACK_TIMEOUT)
                    c.sendto(f"client {i}".encode(), ("127.0.0.1", port))
                    data, addr = up.recvfrom(100)
                    assert data == f"client {i}".encode()
                    sources.add(addr)
                    up.sendto(b"reply " + data, addr)
                    assert c.recv(100) == b"reply " + data
                assert len(sources) == 3  # one upstream socket per client
                r.wait_err(r"(closed[\s\S]*){3}")  # reclaimed after the idle timeout
            finally:
                for c in clients:
                    c.close()
