"""socketkit relay over loopback: both paths (splice and portable), fork, bounded memory."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest
from relaysupport import LOOPBACK_TIMEOUT, recv_all, run, running, sha, sk

from helpers import start_server

pytestmark = pytest.mark.timeout(60)

PAYLOAD = os.urandom(4 << 20)


@pytest.mark.parametrize("extra", [["--splice"], []], ids=["splice", "portable"])
def test_relay_fork_many_clients(extra: list[str]) -> None:
    with running(sk("listen", "-v", "-k", "127.0.0.1", "0", "-e", "cat")) as upstream:
        up = upstream.port()
        with running(
            sk("relay", "-v", *extra, "tcp-listen:127.0.0.1:0,fork", f"tcp:127.0.0.1:{up}")
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
            pattern = r"spliced" if extra else r"closed; \d+ bytes sent"
            relay.wait_err(pattern)


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
@pytest.mark.parametrize("extra", [["--splice"], []], ids=["splice", "portable"])
def test_relay_memory_bounded_under_slow_reader(extra: list[str]) -> None:
    """Upstream never reads: the relay must stop reading from the client, not buffer."""
    with socket.socket() as up:
        up.bind(("127.0.0.1", 0))
        up.listen()
        up_port = up.getsockname()[1]
        with running(
            sk("relay", "-v", *extra, "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{up_port}")
        ) as r:
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
